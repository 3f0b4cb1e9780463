"""One page of a caller's predictions, newest first, with an opaque cursor to the next page."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from sqlalchemy import select, tuple_

from ..schema import InputError
from ..service.keys import Caller
from ..service.services import Services
from ..store.models import Prediction


def prediction_page(
    services: Services, who: Caller, limit: int, cursor: str | None
) -> tuple[list[Prediction], str | None]:
    """Up to `limit` predictions after `cursor`, and the cursor of the page after them (None at the end)."""
    query = select(Prediction).where(Prediction.owner_key_id == who.key_id)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        query = query.where(tuple_(Prediction.created_at, Prediction.id) < tuple_(created, last_id))
    query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit + 1)
    with services.sessions() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    return page, _encode_cursor(page[-1]) if more else None


MAX_CURSOR_CHARS = 256


def _encode_cursor(prediction: Prediction) -> str:
    raw = json.dumps([prediction.created_at.isoformat(), prediction.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    if len(cursor) > MAX_CURSOR_CHARS:  # ours are ~80 characters; a long one is not ours (and not parsed)
        raise InputError("cursor", "is not a cursor this server gave out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError, RecursionError):
        raise InputError("cursor", "is not a cursor this server gave out") from None
