"""Limits that hold across API replicas on one PostgreSQL: creates racing on two replicas' connections at once.

Each "replica" here is a database engine of its own, as each `fluxedit serve` has; many threads create at the same
moment through both. A key's spending limit, the queue limit, the rate limit and the storage quota admit exactly
what one replica alone would, never more.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import pytest

from fluxedit.schema import Status
from fluxedit.service.admission import Admission, QueueFull, SharedRateLimiter, SpendingLimitReached
from fluxedit.service.keys import Caller, KeyRing
from fluxedit.service.lifecycle import Lifecycle
from fluxedit.service.quota import NOBODY, QuotaExceeded, StorageQuota
from fluxedit.store.database import migrate, open_database
from fluxedit.store.models import Prediction, StoredFile
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)

RACERS = 12


@pytest.fixture
def two_replicas(postgres_url):  # noqa: F811
    migrate(postgres_url)
    return open_database(postgres_url), open_database(postgres_url)


def race(attempt: Callable[[int], None], refused: type[Exception]) -> int:
    """Run `attempt` in RACERS threads released together; how many were admitted (the others raise `refused`)."""
    start, admitted, errors = threading.Barrier(RACERS), [], []

    def run(index: int) -> None:
        start.wait()
        try:
            attempt(index)
            admitted.append(index)
        except refused:
            pass
        except Exception as error:  # anything else is a bug, not a refusal
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return len(admitted)


def prediction(owner: str | None, cost: float) -> Prediction:
    return Prediction(id=secrets.token_hex(12), owner_key_id=owner, model="m", version="1", status=Status.created,
                      input={}, inputs_ready=True, logs="", metrics={}, base_url="", cost=cost)  # fmt: skip


def test_a_spending_limit_holds_when_both_replicas_create_at_once(two_replicas):
    key = KeyRing(two_replicas[0]).create("capped", spending_limit=0.05).record
    caller = Caller(key.id, key.name, key.spending_limit)
    admission = Admission(max_queue=1000)
    lifecycles = [Lifecycle(sessions, Prediction) for sessions in two_replicas]

    def create(index: int) -> None:
        row = prediction(key.id, 0.025)
        lifecycles[index % 2].create(row, lambda session: admission.check(session, caller, 0.025, row.id))

    assert race(create, SpendingLimitReached) == 2  # $0.05 is two predictions at $0.025, whichever replica


def test_the_queue_limit_holds_when_both_replicas_create_at_once(two_replicas):
    admission = Admission(max_queue=3)
    caller = Caller(None, "open")
    lifecycles = [Lifecycle(sessions, Prediction) for sessions in two_replicas]

    def create(index: int) -> None:
        row = prediction(None, 0.025)
        lifecycles[index % 2].create(row, lambda session: admission.check(session, caller, 0.025, row.id))

    assert race(create, QueueFull) == 3


def test_the_rate_limit_is_one_bucket_for_both_replicas(two_replicas):
    limiters = [SharedRateLimiter(sessions, per_minute=1, burst=5) for sessions in two_replicas]

    def take(index: int) -> None:
        if limiters[index % 2].take("key-1") > 0:
            raise QueueFull("no token")

    assert race(take, QueueFull) == 5  # the burst, shared; not five on each replica
    assert limiters[0].take("key-2") == 0  # another key has a bucket of its own


def test_the_storage_quota_holds_when_both_replicas_store_at_once(two_replicas, tmp_path):
    quotas = [StorageQuota(sessions, tmp_path / "trainings", 1000, 0) for sessions in two_replicas]  # 1,000 bytes

    def store(index: int) -> None:
        quota, sessions = quotas[index % 2], two_replicas[index % 2]
        with quota.room_for(NOBODY, 400), sessions.begin() as session:
            session.add(StoredFile(id=secrets.token_hex(8), purpose="upload", filename="a.png",
                                   content_type="image/png", size=400, sha256=secrets.token_hex(32)))  # fmt: skip

    assert race(store, QuotaExceeded) == 2  # 800 of the 1,000 bytes; a third 400 would pass the quota
