"""The predictions one caller may see: get (with the ownership check), wait, cancel, and list page by page.

The seed and Replicate dialects answer the same questions about the same rows; only their wire formats
differ, so the questions are answered here once and each router only translates the answer.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_

from ..schema import FluxeditError, InputError
from ..store.models import Prediction
from .keys import Caller
from .services import Services

MAX_CURSOR_CHARS = 256  # ours are ~80 characters; a longer one is not ours (and not parsed)


class PredictionNotFound(FluxeditError):
    """No prediction of that id for this caller: another key's ids do not exist for it."""

    def __init__(self, prediction_id: str):
        self.prediction_id = prediction_id
        super().__init__(f"prediction {prediction_id} not found")


@dataclass(frozen=True)
class PredictionPage:
    predictions: list[Prediction]  # newest first
    next_cursor: str | None  # None on the last page


class CallerPredictions:
    def __init__(self, services: Services, caller: Caller):
        self.services = services
        self.caller = caller

    def get(self, prediction_id: str) -> Prediction:
        """The prediction if this caller's key made it; PredictionNotFound otherwise."""
        prediction = self.services.runner.get(prediction_id)
        if prediction is None or prediction.owner_key_id != self.caller.key_id:
            raise PredictionNotFound(prediction_id)
        return prediction

    async def wait(self, prediction_id: str, seconds: float) -> Prediction:
        """The prediction once it has ended, or as it is after `seconds`."""
        self.get(prediction_id)
        waited = await self.services.runner.wait(prediction_id, seconds)
        return waited if waited is not None else self.get(prediction_id)

    async def cancel(self, prediction_id: str) -> Prediction:
        """Cancels it (nothing happens to one that has ended) and answers it as it is now."""
        self.get(prediction_id)
        await self.services.runner.cancel(prediction_id)
        return self.get(prediction_id)

    def page(self, limit: int, cursor: str | None) -> PredictionPage:
        """Up to `limit` predictions after `cursor`, and the cursor of the page after them."""
        query = select(Prediction).where(Prediction.owner_key_id == self.caller.key_id)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query = query.where(tuple_(Prediction.created_at, Prediction.id) < tuple_(created, last_id))
        query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit + 1)
        with self.services.sessions() as session:
            rows = list(session.scalars(query))
        page, more = rows[:limit], len(rows) > limit
        return PredictionPage(page, _encode_cursor(page[-1]) if more else None)


def _encode_cursor(prediction: Prediction) -> str:
    raw = json.dumps([prediction.created_at.isoformat(), prediction.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InputError("cursor", "is not a cursor this server gave out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError, RecursionError):
        raise InputError("cursor", "is not a cursor this server gave out") from None
