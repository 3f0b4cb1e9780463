"""A batch ends when its last prediction does: completed_at set, and its one webhook stored in the outbox.

`changed` subscribes to the predictions' Lifecycle within the change's transaction (service/status_effects.py),
so the batch's end and its webhook commit with the change of its last prediction, or not at all. The batch's
row is locked before its predictions are counted, so two predictions ending at once on a database with row
locks (PostgreSQL) cannot both see the other one still running; SQLite's one writer serialises them anyway.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..schema import ACTIVE_STATUSES, Status
from ..store.models import Batch, Prediction, utcnow
from .batch_views import batch_document, summaries
from .lifecycle import StatusChange

log = logging.getLogger(__name__)


class BatchEnds:
    def __init__(self, sender):
        self.sender = sender  # the WebhookSender: the batch webhook is signed as the seed's prediction webhooks

    def changed(self, session: Session, change: StatusChange) -> None:
        batch_id = getattr(change.row, "batch_id", None)
        if batch_id is None or not change.status.ended:
            return
        # A bulk change (a cancel of a thousand) counts its batch's running predictions once per transaction,
        # then one fewer for each of its predictions that ends in it: no query per row.
        open_batches = session.info.setdefault("batch_ends", {})  # batch id -> [its row, predictions running]
        if batch_id not in open_batches:
            batch = session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.completed_at is not None:
                open_batches[batch_id] = None
                return
            active = Prediction.status.in_(tuple(ACTIVE_STATUSES))  # this change was flushed first: not counted
            running = session.scalar(select(func.count()).where(Prediction.batch_id == batch_id, active))
            open_batches[batch_id] = [batch, running]
        else:
            if open_batches[batch_id] is None:
                return
            open_batches[batch_id][1] -= 1
        batch, running = open_batches[batch_id]
        if running > 0:
            return
        open_batches[batch_id] = None
        batch.completed_at = utcnow()
        if batch.status != Status.cancelled:
            batch.status = Status.success  # every prediction has ended, whatever each one's end
        if batch.webhook_url:
            self._webhook(session, batch)

    def _webhook(self, session: Session, batch: Batch) -> None:
        try:
            session.flush()
            document = batch_document(summaries(session, [batch])[0])
            self.sender.enqueue(
                batch.id, batch.webhook_url, document, batch.webhook_secret,
                prediction_status=batch.status.value, session=session,
            )  # fmt: skip
        except Exception:  # a prediction's status change must never fail over its batch's webhook
            log.exception("the webhook of batch %s could not be stored; not sent", batch.id)
