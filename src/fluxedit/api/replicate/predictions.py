"""Replicate's prediction endpoints: create (by model or version), get, cancel, list."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query, Request

from ...schema import InputError, validated_input
from ...service.fetch import MAX_URL_CHARS
from ...service.keys import Caller
from ...service.notify import EVENTS
from ...service.runner import VERSION
from ...service.webhook_secrets import WebhookSecrets
from ..bodies import json_body, optional_string, required_object, shown
from ..deps import base_url, caller, own_hosts, owned_prediction, requested_wait, services
from ..errors import ApiError
from ..listing import prediction_page
from .inputs import MODEL_NAME, their_error, to_edit_input
from .views import prediction_view, still_starting

router = APIRouter(tags=["replicate"])
WEBHOOK_FORMAT = "replicate"
VERSIONS = (VERSION, MODEL_NAME, f"{MODEL_NAME}:{VERSION}")  # an id, or a model reference as Replicate allows


@router.post("/v1/models/{owner}/{name}/predictions", status_code=201)
async def create_model_prediction(request: Request, owner: str, name: str, who: Caller = Depends(caller)) -> dict:
    """replicate.run("black-forest-labs/flux-kontext-dev", ...) lands here; `Prefer: wait` holds the answer."""
    started = time.monotonic()
    if f"{owner}/{name}" != MODEL_NAME:
        raise ApiError(404, f"model {owner}/{name} not found: this server runs {MODEL_NAME}")
    return await _create(request, who, await json_body(request), started)


@router.post("/v1/predictions", status_code=201)
async def create_prediction(request: Request, who: Caller = Depends(caller)) -> dict:
    started = time.monotonic()
    body = await json_body(request)
    version = body.get("version")
    if not isinstance(version, str) or version not in VERSIONS:
        got = "" if version is None else f" (got {shown(version)})"
        raise InputError("version", f"must be {VERSION} or {MODEL_NAME}: the model this server runs{got}")
    return await _create(request, who, body, started)


async def _create(request: Request, who: Caller, body: dict, started: float) -> dict:
    found = services(request)
    wait = requested_wait(request, None)  # before creating: a bad Prefer: wait creates nothing
    given = required_object(body, "input", "an object with at least prompt and input_image")
    webhook, events = _webhook(body)
    try:
        prediction = await found.runner.create(
            who,
            validated_input(to_edit_input(given), prefix="input."),
            base_url=base_url(request),
            own_hosts=own_hosts(request),
            webhook_url=webhook,
            webhook_secret=WebhookSecrets(found.sessions).default_for(who.key_id) if webhook else None,
            webhook_format=WEBHOOK_FORMAT if webhook else None,
            webhook_events=events,
        )
    except InputError as error:
        raise their_error(error) from None
    if wait > 0:
        prediction = await found.runner.wait(prediction.id, wait - (time.monotonic() - started))
    return still_starting(prediction_view(found, prediction, base_url(request)), prediction)


def _webhook(body: dict) -> tuple[str | None, list[str] | None]:
    webhook = optional_string(body, "webhook", max_chars=MAX_URL_CHARS, what="a URL")
    events = body.get("webhook_events_filter")
    if events is None:
        return webhook, None
    if not isinstance(events, list) or not all(isinstance(event, str) and event in EVENTS for event in events):
        raise InputError(
            "webhook_events_filter", f"must be a list of events from {', '.join(EVENTS)} (got {shown(events)})"
        )
    return webhook, list(dict.fromkeys(events)) or None


@router.get("/v1/predictions/{prediction_id}")
async def get_prediction(
    request: Request,
    prediction_id: str,
    wait: str | None = Query(None, description="Seconds to wait for the end (0 to 60); or Prefer: wait=N."),
    who: Caller = Depends(caller),
) -> dict:
    seconds = requested_wait(request, wait)
    owned_prediction(request, who, prediction_id)
    prediction = await services(request).runner.wait(prediction_id, seconds)
    return prediction_view(services(request), prediction, base_url(request))


@router.post("/v1/predictions/{prediction_id}/cancel")
async def cancel_prediction(request: Request, prediction_id: str, who: Caller = Depends(caller)) -> dict:
    owned_prediction(request, who, prediction_id)
    found = services(request)
    await found.runner.cancel(prediction_id)
    return prediction_view(found, found.runner.get(prediction_id), base_url(request))


@router.get("/v1/predictions")
async def list_predictions(
    request: Request,
    cursor: str | None = Query(None),
    limit: int = Query(100, ge=1, le=100),
    who: Caller = Depends(caller),
) -> dict:
    """The caller's predictions, newest first; `next` is the URL of the next page."""
    found = services(request)
    page, next_cursor = prediction_page(found, who, limit, cursor)
    return {
        "previous": None,
        "next": str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None,
        "results": [prediction_view(found, p, base_url(request)) for p in page],
    }
