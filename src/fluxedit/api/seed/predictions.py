"""POST /v1/prediction and friends: create, run, get (long-poll), cancel, list, stream."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select, tuple_

from ...schema import MODEL_SLUG, InputError, validated_input
from ...service.keys import Caller
from ...store.models import Prediction
from ..deps import base_url, caller, own_hosts, requested_wait, services
from ..errors import ApiError, not_found
from ..streams import prediction_events
from .views import prediction_view

router = APIRouter(prefix="/v1/prediction", tags=["predictions"])
MAX_JSON_BYTES = 72 * 1024 * 1024  # a 50 MB image as a data URI, plus room for the rest


@router.post("")
async def create_prediction(request: Request, who: Caller = Depends(caller)) -> dict:
    """Create a prediction; answers at once with its id (or waits with `Prefer: wait=N`)."""
    prediction = await _create(request, who)
    return {"status": "success", "message": "Prediction created successfully", "predictionID": prediction.id}


@router.post("/run")
async def run_prediction(request: Request, who: Caller = Depends(caller)) -> dict:
    """Create a prediction and answer when it has ended."""
    found = services(request)
    prediction = await _create(request, who)
    ended = await found.runner.wait(prediction.id, found.settings.execution_timeout + 60)
    return prediction_view(found, ended, base_url(request))


async def _create(request: Request, who: Caller) -> Prediction:
    body = await _json_body(request)
    model = body.get("model", MODEL_SLUG)
    if model != MODEL_SLUG:
        raise ApiError(404, f"model: unknown model {model!r}; this server runs {MODEL_SLUG}")
    raw_input = body.get("input")
    if not isinstance(raw_input, dict):
        raise InputError("input", "is required: an object with at least prompt and image_url")
    edit_input = validated_input(raw_input, prefix="input.")
    webhook_url = body.get("webhook_url") or None
    secret = body.get("webhook_secret") or None
    if secret is not None and not isinstance(secret, str):
        raise InputError("webhook_secret", "must be a string")
    return await services(request).runner.create(
        who,
        edit_input,
        raw_input,
        base_url=base_url(request),
        own_hosts=own_hosts(request),
        webhook_url=webhook_url,
        webhook_secret=secret,
        version=body.get("version"),
    )


async def _json_body(request: Request) -> dict:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise ApiError(413, f"request body: is larger than {MAX_JSON_BYTES // 2**20} MB")
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body: is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body: must be a JSON object")
    return body


def _owned(request: Request, who: Caller, prediction_id: str) -> Prediction:
    prediction = services(request).runner.get(prediction_id)
    if prediction is None or prediction.owner_key_id != who.key_id:
        raise not_found(f"prediction {prediction_id}")
    return prediction


@router.get("/{prediction_id}")
async def get_prediction(
    request: Request,
    prediction_id: str,
    wait: float | None = Query(None, description="Seconds to wait for the end (at most 60)."),
    who: Caller = Depends(caller),
) -> dict:
    _owned(request, who, prediction_id)
    prediction = await services(request).runner.wait(prediction_id, requested_wait(request, wait))
    return prediction_view(services(request), prediction, base_url(request))


@router.post("/{prediction_id}/cancel")
async def cancel_prediction(request: Request, prediction_id: str, who: Caller = Depends(caller)) -> dict:
    _owned(request, who, prediction_id)
    await services(request).runner.cancel(prediction_id)
    return prediction_view(services(request), services(request).runner.get(prediction_id), base_url(request))


@router.get("")
async def list_predictions(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None),
    who: Caller = Depends(caller),
) -> dict:
    """The caller's predictions, newest first; `next_cursor` fetches the next page."""
    query = select(Prediction).where(Prediction.owner_key_id == who.key_id)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        query = query.where(tuple_(Prediction.created_at, Prediction.id) < tuple_(created, last_id))
    query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit + 1)
    found = services(request)
    with found.sessions() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]) if more else None
    return {
        "data": [prediction_view(found, p, base_url(request)) for p in page],
        "next_cursor": next_cursor,
        "next": str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None,
    }


def _encode_cursor(prediction: Prediction) -> str:
    raw = json.dumps([prediction.created_at.isoformat(), prediction.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError):
        raise InputError("cursor", "is not a cursor this server gave out") from None


@router.get("/{prediction_id}/stream")
async def stream_prediction(
    request: Request,
    prediction_id: str,
    previews: bool = Query(False, description="Also send a small JPEG preview after each step."),
    who: Caller = Depends(caller),
) -> StreamingResponse:
    """Server-Sent Events: status, progress (step i of N), optional previews, then the output."""
    _owned(request, who, prediction_id)
    events = prediction_events(services(request), prediction_id, base_url(request), previews, prediction_view)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
