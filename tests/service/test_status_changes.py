"""One function changes a status; what follows it subscribes: within the change's transaction (what it writes
commits with the change, or neither does) or after the commit (it sees the change, and cannot undo it)."""

from __future__ import annotations

import pytest

from fluxedit.schema import Status
from fluxedit.service.lifecycle import Lifecycle
from fluxedit.store.database import open_database
from fluxedit.store.models import Prediction, utcnow


def new_prediction(prediction_id: str) -> Prediction:
    return Prediction(id=prediction_id, model="m", version="1", status=Status.created, input={}, logs="", metrics={})


@pytest.fixture
def lifecycle(tmp_path) -> Lifecycle:
    return Lifecycle(
        open_database(f"sqlite:///{tmp_path / 'db.sqlite'}"), Prediction, cleared_on_requeue=("started_at",)
    )


def stored(lifecycle: Lifecycle, prediction_id: str) -> Prediction:
    with lifecycle.sessions() as session:
        return session.get(Prediction, prediction_id)


def test_subscribers_see_each_change_once_in_order_and_an_ended_status_is_final(lifecycle):
    seen_within, seen_after = [], []
    lifecycle.within_transaction(lambda session, change: seen_within.append((change.previous, change.status)))
    lifecycle.after_commit(lambda change: seen_after.append((change.id, change.status, change.logged)))
    lifecycle.create(new_prediction("p1"))
    assert lifecycle.change("p1", Status.processing, log_line="first\nsecond", metrics_update={"queue_time": 1.5})
    assert lifecycle.fail("p1", "EXECUTION_ERROR", "it broke")
    assert not lifecycle.change("p1", Status.success)  # a late message cannot change an end
    assert seen_within == [(None, Status.created), (Status.created, Status.processing),
                           (Status.processing, Status.error)]  # fmt: skip
    assert seen_after == [("p1", Status.created, False), ("p1", Status.processing, True), ("p1", Status.error, True)]
    row = stored(lifecycle, "p1")
    assert row.status == Status.error and row.error_code == "EXECUTION_ERROR" and row.completed_at is not None
    assert [line.split(" ", 1)[1] for line in row.logs.splitlines()] == ["first", "second", "it broke"]
    assert row.metrics == {"queue_time": 1.5}


def test_a_failing_in_transaction_subscriber_undoes_the_change_so_a_change_never_loses_its_webhook(lifecycle):
    lifecycle.create(new_prediction("p2"))
    told = []
    lifecycle.after_commit(told.append)

    def outbox_full(session, change):
        raise RuntimeError("the outbox row could not be written")

    lifecycle.within_transaction(outbox_full)
    with pytest.raises(RuntimeError):
        lifecycle.change("p2", Status.processing)
    assert stored(lifecycle, "p2").status == Status.created and told == []  # neither the change nor its news


def test_a_failing_after_commit_subscriber_neither_undoes_the_change_nor_silences_the_others(lifecycle):
    told = []
    lifecycle.after_commit(lambda change: 1 / 0)
    lifecycle.after_commit(lambda change: told.append(change.status))
    lifecycle.create(new_prediction("p3"))
    lifecycle.change("p3", Status.starting, started_at=utcnow())
    assert stored(lifecycle, "p3").status == Status.starting and told == [Status.created, Status.starting]
    lifecycle.change("p3", Status.created, log_line="re-queued")  # back in the queue: its start is forgotten
    assert stored(lifecycle, "p3").started_at is None
