"""What follows a status change: each effect subscribes to a Lifecycle's status-change event.

Within the change's transaction: the webhook's delivery row (service/notify.py), so the change and its
webhook commit together. After the commit: the ended-predictions counter, and waking long-polls and SSE
streams (the EventHub). The queue-depth gauge is counted when it is read (a scrape, /health), not on each
change: a prediction changes status four times, and the count was a query on each one's critical path.
A prediction of a batch that ends may end its batch (service/batch_ends.py), in the same transaction, so the
batch's end and its webhook commit with the change of its last prediction.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..schema import Status
from ..store.models import Prediction
from .events import EventHub
from .lifecycle import Lifecycle, StatusChange
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)


def subscribe_prediction_effects(lifecycle: Lifecycle, hub: EventHub, metrics: ServiceMetrics, webhooks) -> None:
    lifecycle.within_transaction(lambda session, change: webhooks.changed(change.row, change.previous,
                                                                          change.logged, session=session))  # fmt: skip
    lifecycle.after_commit(lambda change: count_ended(metrics, change))
    lifecycle.after_commit(lambda change: tell_waiters(hub, change))


def subscribe_batch_effects(lifecycle: Lifecycle, batch_ends) -> None:
    """`batch_ends`: service/batch_ends.py's BatchEnds, told of every change within its transaction."""
    lifecycle.within_transaction(batch_ends.changed)


def subscribe_training_effects(lifecycle: Lifecycle, hub: EventHub) -> None:
    lifecycle.after_commit(lambda change: tell_waiters(hub, change))


def tell_waiters(hub: EventHub, change: StatusChange) -> None:
    """Streams get the new status; once it has ended, a `done` event, and long-polls wake up."""
    hub.publish(change.id, {"type": "status", "status": change.status})
    if change.status.ended:
        hub.publish(change.id, {"type": "done", "status": change.status})
        hub.finish(change.id)


def count_ended(metrics: ServiceMetrics, change: StatusChange) -> None:
    if change.status.ended:
        metrics.predictions.labels(change.status.value).inc()


class QueueGauge:
    """The queue-depth gauge: how many predictions wait (status `created`), counted in the store each time the
    gauge is read, so every replica reports the shared queue exactly, and changing a status costs no count."""

    def __init__(self, sessions: sessionmaker[Session], metrics: ServiceMetrics):
        self.sessions = sessions
        self.last = 0
        metrics.queue_depth.set_function(self.count)

    def count(self) -> int:
        """The count now; while the database cannot answer, the last one (a scrape or /health during an outage
        must still show every other figure)."""
        try:
            with self.sessions() as session:
                self.last = session.scalar(select(func.count()).where(Prediction.status == Status.created)) or 0
        except SQLAlchemyError as error:
            log.warning("the queue depth could not be counted (%s); showing the last count", error)
        return self.last
