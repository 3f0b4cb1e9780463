"""Whether a new prediction may join the queue: the queue limits, a per-key rate limit and the spending limit.

The limits are checked inside the transaction that inserts the prediction, after the insert (which takes
the database's write lock) and with no await in between, so concurrent creates cannot all pass one check.
On PostgreSQL, where an insert locks no other, the check first takes an advisory lock held to the commit, so
creates on every replica take turns at it; the rate limit's buckets are rows there, locked per key.
A key's spending counts the price of its queued and running predictions as well as its finished ones;
a prediction whose input image is fetched later reserves the most it can cost until its size is known.

A batch's predictions (POST /v1/batches) are admitted whole, by `check_batch`: their images are counted
against limits of their own (BatchLimits), not the queue limits of single predictions, which count only
predictions outside batches. A 1,000-image batch is one request a user expects taken whole, not refused
because it is longer than the per-key queue; and a key's waiting batch does not block its single edits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from ..resolution import ASPECT_RATIOS, output_size
from ..schema import ACTIVE_STATUSES, EditInput, FluxeditError, Status
from ..store.database import ADMISSION_LOCK, advisory_xact_lock, is_postgresql_session
from ..store.models import Prediction, RateBucket
from .keys import Caller
from .pricing import prediction_cost

QUEUE_RETRY_AFTER_S = 10  # a full queue frees up as work runs; there is no exact time to give
WAITING = Status.created
CHARGED = (*ACTIVE_STATUSES, Status.success)  # reserved or spent; errors and cancels cost nothing
# Every size match_input and auto can give is ~1 MP, sides rounded to 16, aspect at most 4:1 (imaging.decode):
# under 2 MP, so at most 2 price units per image (tests/service/test_access.py checks it).
MAX_UNITS_PER_IMAGE = 2


class TooManyRequests(FluxeditError):
    """A limit that frees up with time: 429 with Retry-After (whole seconds)."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float = QUEUE_RETRY_AFTER_S):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class QueueFull(TooManyRequests):
    code = "queue_full"


class RateLimited(TooManyRequests):
    code = "rate_limit_exceeded"


class SpendingLimitReached(FluxeditError):
    pass


@dataclass(frozen=True)
class BatchLimits:
    max_images: int  # in one batch, and waiting in one key's batches together (FLUXEDIT_MAX_BATCH_IMAGES)
    max_queue: int  # waiting in every key's batches together (FLUXEDIT_MAX_BATCH_QUEUE)


def price_ceiling(edit_input: EditInput, price_per_image: float) -> float:
    """The most a prediction can cost before its input image's size is known."""
    if edit_input.resolution_mode in ASPECT_RATIOS:  # the output size does not depend on the input
        width, height = output_size(edit_input.resolution_mode, 1, 1)
        return prediction_cost(width, height, edit_input.num_images, price_per_image)
    return round(MAX_UNITS_PER_IMAGE * edit_input.num_images * price_per_image, 6)


class RateLimiter:
    """A token bucket per key: `per_minute` tokens a minute, holding at most `burst` (default: a minute's worth)."""

    def __init__(self, per_minute: int, burst: int = 0, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.burst = float(burst or per_minute)
        self.clock = clock
        self._buckets: dict[str | None, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def take(self, key: str | None) -> float:
        """0 when a token was taken; otherwise the seconds until one is there (nothing is taken)."""
        now = self.clock()
        tokens, wait = self.refill(*self._buckets.get(key, (self.burst, now)), now)
        self._buckets[key] = (tokens, now)
        return wait

    def refill(self, tokens: float, then: float, now: float) -> tuple[float, float]:
        """The bucket's tokens after this take, and 0 (a token taken) or the seconds until one is there."""
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.per_minute / 60)
        if tokens < 1:
            return tokens, (1 - tokens) * 60 / self.per_minute
        return tokens - 1, 0.0


class SharedRateLimiter(RateLimiter):
    """The same buckets as rows (PostgreSQL, several replicas): a take locks its key's row, so the replicas
    together allow a key what one replica would. The clock is the wall clock, which the replicas share."""

    def __init__(self, sessions: sessionmaker[Session], per_minute: int, burst: int = 0, clock=time.time):
        super().__init__(per_minute, burst, clock)
        self.sessions = sessions

    def take(self, key: str | None) -> float:
        owner, now = key or "open", self.clock()
        with self.sessions.begin() as session:
            fresh = {"owner": owner, "tokens": self.burst, "counted_at": now}
            session.execute(insert(RateBucket).values(**fresh).on_conflict_do_nothing(index_elements=["owner"]))
            bucket = session.get(RateBucket, owner, with_for_update=True, populate_existing=True)
            bucket.tokens, wait = self.refill(bucket.tokens, bucket.counted_at, now)
            bucket.counted_at = now
        return wait


class Admission:
    def __init__(
        self, *, max_queue: int, max_queue_per_key: int = 0, rate_limit: int = 0, burst: int = 0, sessions=None
    ):
        """`sessions`: the database, when its rate-limit buckets are to be shared by replicas (PostgreSQL)."""
        self.max_queue = max_queue
        self.max_queue_per_key = max_queue_per_key
        self.rate: RateLimiter | None = None
        if rate_limit > 0:
            shared = sessions is not None and is_postgresql_session(sessions)
            self.rate = SharedRateLimiter(sessions, rate_limit, burst) if shared else RateLimiter(rate_limit, burst)

    def take_rate_token(self, caller: Caller) -> None:
        """Every create attempt takes a token, admitted or not, so a flood of bad requests is limited too."""
        if self.rate is None:
            return
        wait = self.rate.take(caller.key_id)
        if wait > 0:
            raise RateLimited(
                f"rate limit: at most {self.rate.per_minute} predictions a minute per key; "
                f"retry in {math.ceil(wait)} s",
                retry_after=wait,
            )

    def check(self, session: Session, caller: Caller, cost: float, new_id: str | None = None) -> None:
        """Refuse a prediction costing `cost` that would pass a limit. `new_id`: the prediction, already
        inserted in this transaction, left out of the counts."""
        if new_id:
            advisory_xact_lock(session, ADMISSION_LOCK)  # PostgreSQL: other replicas' creates wait for this commit
        others = [Prediction.id != new_id] if new_id else []
        single = Prediction.batch_id.is_(None)  # a batch's images have limits of their own (check_batch)
        waiting = session.scalar(select(func.count()).where(Prediction.status == WAITING, single, *others))
        if waiting >= self.max_queue:
            raise QueueFull(f"the queue is full ({waiting} predictions waiting, at most {self.max_queue}); retry later")
        mine = [Prediction.owner_key_id == caller.key_id, *others]
        if self.max_queue_per_key > 0:
            queued = session.scalar(select(func.count()).where(Prediction.status == WAITING, single, *mine))
            if queued >= self.max_queue_per_key:
                raise QueueFull(
                    f"this key has {queued} predictions waiting, at most {self.max_queue_per_key} per key; "
                    "retry when some have started"
                )
        if caller.spending_limit is not None:
            self._check_spending(session, caller, cost, mine)

    def check_batch(
        self, session: Session, caller: Caller, cost: float, batch_id: str, size: int, limits: BatchLimits
    ) -> None:
        """Refuse a batch of `size` images costing `cost` in all, its rows already inserted in this transaction:
        past the batch queues (every key's, this key's) or the key's spending limit. The whole batch or nothing."""
        advisory_xact_lock(session, ADMISSION_LOCK)
        other_batches = [
            Prediction.status == WAITING,
            Prediction.batch_id.is_not(None),
            Prediction.batch_id != batch_id,
        ]
        waiting = session.scalar(select(func.count()).where(*other_batches))
        if waiting + size > limits.max_queue:
            raise QueueFull(
                f"the batch queue is full: {waiting} images wait in batches, and this batch's {size} would pass "
                f"the {limits.max_queue} this server takes (FLUXEDIT_MAX_BATCH_QUEUE); retry later"
            )
        mine = session.scalar(select(func.count()).where(*other_batches, Prediction.owner_key_id == caller.key_id))
        if mine + size > limits.max_images:
            raise QueueFull(
                f"this key has {mine} images waiting in its batches; with this batch's {size} that passes the "
                f"{limits.max_images} one key may have waiting (FLUXEDIT_MAX_BATCH_IMAGES); retry when some have run"
            )
        if caller.spending_limit is not None:
            others = or_(Prediction.batch_id.is_(None), Prediction.batch_id != batch_id)
            what = f"this batch (${cost:.3f} for {size} images, reserved at once)"
            self._check_spending(session, caller, cost, [Prediction.owner_key_id == caller.key_id, others], what)

    @staticmethod
    def _check_spending(session: Session, caller: Caller, cost: float, mine: list, what: str = "") -> None:
        success = Prediction.status == Status.success
        spent, reserved = session.execute(
            select(
                func.coalesce(func.sum(case((success, Prediction.cost), else_=0.0)), 0.0),
                func.coalesce(func.sum(case((success, 0.0), else_=Prediction.cost)), 0.0),
            ).where(Prediction.status.in_(CHARGED), *mine)
        ).one()
        if round(spent + reserved + cost, 6) > caller.spending_limit:
            what = what or f"this prediction (${cost:.3f})"
            raise SpendingLimitReached(
                f"{what} would pass this key's ${caller.spending_limit:.2f} spending limit: "
                f"${spent:.3f} spent and ${reserved:.3f} reserved by its queued and running predictions"
            )
