"""POST /v1/prediction and friends: create, run, get (long-poll), cancel, list, stream."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ...schema import MODEL_SLUG, validated_input
from ...service.fetch import MAX_URL_CHARS
from ...service.keys import Caller
from ...store.models import Prediction
from ..bodies import json_body, optional_string, required_object, shown
from ..deps import base_url, caller, own_hosts, owned_prediction, requested_wait, services
from ..errors import ApiError
from ..listing import prediction_page
from ..streams import prediction_events
from .views import prediction_view

router = APIRouter(prefix="/v1/prediction", tags=["predictions"])
MAX_NAME_CHARS = 100  # model and version are stored in columns of this width
MAX_SECRET_CHARS = 1024


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
    body = await json_body(request)
    model = optional_string(body, "model", max_chars=MAX_NAME_CHARS) or MODEL_SLUG
    if model != MODEL_SLUG:
        raise ApiError(404, f"model: unknown model {shown(model)}; this server runs {MODEL_SLUG}")
    version = optional_string(body, "version", max_chars=MAX_NAME_CHARS)
    raw_input = required_object(body, "input", "an object with at least prompt and image_url")
    edit_input = validated_input(raw_input, prefix="input.")
    webhook_url = optional_string(body, "webhook_url", max_chars=MAX_URL_CHARS, what="a URL")
    secret = optional_string(body, "webhook_secret", max_chars=MAX_SECRET_CHARS)
    return await services(request).runner.create(
        who,
        edit_input,
        base_url=base_url(request),
        own_hosts=own_hosts(request),
        webhook_url=webhook_url,
        webhook_secret=secret,
        version=version,
    )


@router.get("/{prediction_id}")
async def get_prediction(
    request: Request,
    prediction_id: str,
    wait: str | None = Query(None, description="Seconds to wait for the end: a number from 0 to 60."),
    who: Caller = Depends(caller),
) -> dict:
    seconds = requested_wait(request, wait)
    owned_prediction(request, who, prediction_id)
    prediction = await services(request).runner.wait(prediction_id, seconds)
    return prediction_view(services(request), prediction, base_url(request))


@router.post("/{prediction_id}/cancel")
async def cancel_prediction(request: Request, prediction_id: str, who: Caller = Depends(caller)) -> dict:
    owned_prediction(request, who, prediction_id)
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
    found = services(request)
    page, next_cursor = prediction_page(found, who, limit, cursor)
    return {
        "data": [prediction_view(found, p, base_url(request)) for p in page],
        "next_cursor": next_cursor,
        "next": str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None,
    }


@router.get("/{prediction_id}/stream")
async def stream_prediction(
    request: Request,
    prediction_id: str,
    previews: bool = Query(False, description="Also send a small JPEG preview after each step."),
    who: Caller = Depends(caller),
) -> StreamingResponse:
    """Server-Sent Events: status, progress (step i of N), optional previews, then the output."""
    owned_prediction(request, who, prediction_id)
    events = prediction_events(services(request), prediction_id, base_url(request), previews, prediction_view)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
