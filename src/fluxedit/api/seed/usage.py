"""GET /v1/usage: the caller's images and cost per day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from ...service.keys import Caller
from ...store.models import Prediction
from ..deps import caller, services

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("")
async def usage(request: Request, days: int = Query(30, ge=1, le=366), who: Caller = Depends(caller)) -> dict:
    since = datetime.now(UTC) - timedelta(days=days)
    query = select(Prediction.created_at, Prediction.output, Prediction.cost).where(
        Prediction.owner_key_id == who.key_id, Prediction.status == "success", Prediction.created_at >= since
    )
    per_day: dict[str, dict] = {}
    with services(request).sessions() as session:
        for created_at, output, cost in session.execute(query):
            day = per_day.setdefault(created_at.date().isoformat(), {"images": 0, "predictions": 0, "cost": 0.0})
            day["images"] += len(output or [])
            day["predictions"] += 1
            day["cost"] = round(day["cost"] + (cost or 0.0), 6)
    data = [{"date": date, **totals} for date, totals in sorted(per_day.items())]
    total = {
        "images": sum(d["images"] for d in data),
        "predictions": sum(d["predictions"] for d in data),
        "cost": round(sum(d["cost"] for d in data), 6),
    }
    return {"days": days, "data": data, "total": total, "spending_limit": who.spending_limit}
