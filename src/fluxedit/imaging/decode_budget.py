"""Admission for image decodes: at most N at once, and their estimated memory within a budget.

Thread-safe (decodes run in threads, from the event loop's executor and from any other thread).
Admission is first come, first served, so a large image is not starved by a stream of small ones.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class DecodeBudget:
    def __init__(self, memory_bytes: int, slots: int):
        self.memory_bytes = memory_bytes
        self.slots = slots
        self._free_bytes = memory_bytes
        self._free_slots = slots
        self._turns: deque[object] = deque()
        self._changed = threading.Condition()

    @contextmanager
    def admitted(self, estimated_bytes: int) -> Iterator[None]:
        """Hold a slot and `estimated_bytes` (at most the whole budget) while the block runs."""
        cost = min(estimated_bytes, self.memory_bytes)
        turn = object()
        with self._changed:
            self._turns.append(turn)
            try:
                while not (self._turns[0] is turn and self._free_slots and self._free_bytes >= cost):
                    self._changed.wait()
                self._free_slots -= 1
                self._free_bytes -= cost
            finally:
                self._turns.remove(turn)
                self._changed.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._changed:
                self._free_slots += 1
                self._free_bytes += cost
                self._changed.notify_all()

    def in_use(self) -> tuple[int, int]:
        """(slots, bytes) held now."""
        with self._changed:
            return self.slots - self._free_slots, self.memory_bytes - self._free_bytes


def release_free_memory() -> None:
    """Give memory freed by a decode back to the system. glibc keeps large freed blocks in the arena of the
    thread that freed them, so each decode thread would otherwise hold on to its largest decode for good."""
    if _LIBC_TRIM is not None:
        _LIBC_TRIM(0)


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc; other C libraries give memory back differently
    except (OSError, AttributeError):
        return None


_LIBC_TRIM = _malloc_trim()
