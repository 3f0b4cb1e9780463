"""Whose queued work runs next: keys take turns, so one caller's long queue cannot hold everyone else back.

The key served least recently goes next (a key never served first, the one with the oldest waiting
prediction among equals); within a key, its oldest prediction. The keyless caller (None) is one key.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime


class KeyTurns:
    def __init__(self) -> None:
        self._served: dict[str | None, int] = {}  # key -> when it was last handed a worker (a counter)
        self._clock = itertools.count()

    def order(self, oldest_waiting: Mapping[str | None, datetime]) -> list[str | None]:
        """The keys with ready work (key -> its oldest ready prediction's creation time), whose turn first."""
        return sorted(oldest_waiting, key=lambda key: (self._served.get(key, -1), oldest_waiting[key]))

    def next_key(self, oldest_waiting: Mapping[str | None, datetime]) -> str | None:
        return self.order(oldest_waiting)[0]

    def served(self, key: str | None) -> None:
        self._served[key] = next(self._clock)
