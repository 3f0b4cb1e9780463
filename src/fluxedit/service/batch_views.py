"""What a batch looks like from outside: its counts, progress, cost and time left, read from its predictions.

Nothing of this is stored on the batch: one grouped query over its predictions (by status) gives the counts,
the cost so far (its successful predictions) and the moment of its latest end, from which the pace so far
gives the estimate of the time left. The same document is the API's view and the batch webhook's body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..schema import Status
from ..store.files import FileStore
from ..store.models import Batch, Prediction
from .urls import output_url
from .webhook_outbox import iso


@dataclass(frozen=True)
class BatchSummary:
    batch: Batch
    counts: dict[str, int]  # every status, 0 where none
    cost: float  # dollars spent so far: its successful predictions
    last_end: datetime | None  # when the latest of its predictions ended

    @property
    def done(self) -> int:
        return sum(count for status, count in self.counts.items() if Status(status).ended)


def summaries(session: Session, batches: list[Batch]) -> list[BatchSummary]:
    """Each batch's summary, from one query over all their predictions."""
    if not batches:
        return []
    success = Prediction.status == Status.success
    rows = session.execute(
        select(
            Prediction.batch_id,
            Prediction.status,
            func.count(),
            func.coalesce(func.sum(case((success, Prediction.cost), else_=0.0)), 0.0),
            func.max(Prediction.completed_at),
        )
        .where(Prediction.batch_id.in_([batch.id for batch in batches]))
        .group_by(Prediction.batch_id, Prediction.status)
    ).all()
    found: dict[str, list] = {batch.id: [] for batch in batches}
    for row in rows:
        found[row[0]].append(row)
    return [_summary(batch, found[batch.id]) for batch in batches]


def _summary(batch: Batch, rows: list) -> BatchSummary:
    counts = {status.value: 0 for status in Status}
    cost, last_end = 0.0, None
    for _, status, count, spent, ended_at in rows:
        counts[Status(status).value] = count
        cost += spent or 0.0
        if ended_at is not None:
            ended_at = _aware(ended_at)
            last_end = ended_at if last_end is None else max(last_end, ended_at)
    return BatchSummary(batch, counts, round(cost, 6), last_end)


def batch_urls(base_url: str, batch_id: str) -> dict[str, str]:
    root = f"{base_url}/v1/batches/{batch_id}"
    return {"get": root, "cancel": f"{root}/cancel", "items": f"{root}/items", "results": f"{root}/results.zip"}


def batch_document(summary: BatchSummary, base_url: str | None = None) -> dict:
    """The batch view of the API contract (docs/api.md, "Batches"): also the batch webhook's body."""
    batch = summary.batch
    total, done = batch.total, summary.done
    return {
        "id": batch.id,
        "status": batch.status.value,
        "total": total,
        "counts": summary.counts,
        "progress": {"done": done, "total": total, "percent": round(100 * done / total, 1) if total else 100.0},
        "cost": summary.cost,
        "estimated_seconds_left": _seconds_left(summary),
        "skipped": list(batch.skipped or []),
        "input": batch.input,
        "urls": batch_urls(base_url or batch.base_url, batch.id),
        "created_at": iso(batch.created_at),
        "completed_at": iso(batch.completed_at),
    }


def _seconds_left(summary: BatchSummary) -> float | None:
    """From the pace so far: the time from the batch's creation to its latest end, per ended prediction."""
    batch, done = summary.batch, summary.done
    if batch.completed_at is not None or done >= batch.total:
        return 0.0
    if done == 0 or summary.last_end is None:
        return None
    elapsed = max(0.0, (summary.last_end - _aware(batch.created_at)).total_seconds())
    return round(elapsed / done * (batch.total - done), 1)


@dataclass(frozen=True)
class BatchItem:
    index: int
    name: str
    prediction_id: str
    status: str
    output: list[str]
    error: str | None
    seed: str | None


def batch_items(
    session: Session, files: FileStore, batch: Batch, start: int, limit: int, base_url: str
) -> tuple[list[BatchItem], int | None]:
    """Up to `limit` items from index `start`, and the index the next page starts at (None after the last)."""
    rows = list(
        session.scalars(
            select(Prediction)
            .where(Prediction.batch_id == batch.id, Prediction.batch_index >= start)
            .order_by(Prediction.batch_index)
            .limit(limit + 1)
        )
    )
    page, more = rows[:limit], len(rows) > limit
    present = files.present(file_id for row in page for file_id in row.output or [])
    items = [
        BatchItem(
            index=row.batch_index,
            name=row.batch_name or f"image-{row.batch_index}",
            prediction_id=row.id,
            status=row.status.value,
            output=[
                output_url(base_url, file_id, present[file_id].content_type)
                for file_id in row.output or []
                if file_id in present and row.status == Status.success
            ],
            error=row.error_message if row.status == Status.error else None,
            seed=row.seed,
        )
        for row in page
    ]
    return items, (page[-1].batch_index + 1 if more else None)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
