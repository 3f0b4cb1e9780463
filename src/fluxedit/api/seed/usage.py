"""GET /v1/usage: the caller's images and cost per day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from ...schema import Status
from ...store.models import Prediction
from ..deps import CallerDep, ServicesDep
from ..errors import SEED_ERRORS
from .protocol import Usage, UsageDay, UsageTotals

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=SEED_ERRORS)


@router.get("")
async def usage(found: ServicesDep, who: CallerDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Usage:
    """Billed predictions (those that succeeded) of this key, per day of their creation (UTC)."""
    since = datetime.now(UTC) - timedelta(days=days)
    query = select(Prediction.created_at, Prediction.output, Prediction.cost).where(
        Prediction.owner_key_id == who.key_id, Prediction.status == Status.success, Prediction.created_at >= since
    )
    per_day: dict[str, UsageTotals] = {}
    with found.sessions() as session:
        for created_at, output, cost in session.execute(query):
            day = per_day.setdefault(created_at.date().isoformat(), UsageTotals(images=0, predictions=0, cost=0.0))
            day.images += len(output or [])
            day.predictions += 1
            day.cost = round(day.cost + (cost or 0.0), 6)
    data = [UsageDay(date=date, **totals.model_dump()) for date, totals in sorted(per_day.items())]
    total = UsageTotals(
        images=sum(d.images for d in data),
        predictions=sum(d.predictions for d in data),
        cost=round(sum(d.cost for d in data), 6),
    )
    return Usage(days=days, data=data, total=total, spending_limit=who.spending_limit)
