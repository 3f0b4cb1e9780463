"""When a failed webhook is tried again: exponential backoff with jitter, inside a time window."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetrySchedule:
    """Wait base_s after the first failure, twice that after each next one, at most max_delay_s, each wait
    shortened by up to `jitter` of itself at random (so receivers that come back are not hit all at once);
    keep trying until window_s after the delivery was made, with one last try at its end."""

    base_s: float = 5.0
    max_delay_s: float = 300.0
    window_s: float = 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_delay_s:
            raise ValueError("webhook_retry_base must be above 0 and at most webhook_retry_max_delay")
        if self.window_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError("webhook_retry_window must be at least 0, and the jitter from 0 to below 1")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th failed try (1 for the first)."""
        ceiling = min(self.max_delay_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))
        return ceiling * (1 - self.jitter * (rng or random).random())

    def next_attempt(
        self, created_at: datetime, now: datetime, failures: int, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try next, or None: the window has passed, give up."""
        deadline = created_at + timedelta(seconds=self.window_s)
        if now >= deadline:
            return None
        return min(now + timedelta(seconds=self.delay(failures, rng)), deadline)
