"""Replicate's prediction endpoints: create (by model or version), get, cancel, list."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ...schema import InputError
from ...service.keys import Caller
from ...service.services import Services
from ...service.webhook_secrets import WebhookSecrets
from ..bodies import JsonBody, NoBody, json_request
from ..deps import BaseUrlDep, CallerDep, CallerPredictionsDep, OwnHostsDep, PreferWaitDep, ServicesDep, WaitDep
from ..errors import ApiError
from .errors import REPLICATE_ERRORS
from .inputs import MODEL_NAME, their_error
from .protocol import (
    CreateRequest,
    ModelPredictionRequest,
    ReplicatePrediction,
    ReplicatePredictionList,
    VersionPredictionRequest,
)
from .views import prediction_view, still_starting

router = APIRouter(tags=["replicate"], responses=REPLICATE_ERRORS)
WEBHOOK_FORMAT = "replicate"


def _started() -> float:
    return time.monotonic()  # a create's wait counts from its arrival, before the body is read


def _this_model(owner: str, name: str) -> None:
    if f"{owner}/{name}" != MODEL_NAME:
        raise ApiError(404, f"model {owner}/{name} not found: this server runs {MODEL_NAME}")


StartedDep = Annotated[float, Depends(_started)]


@router.post(
    "/v1/models/{owner}/{name}/predictions",
    status_code=201,
    openapi_extra=json_request(ModelPredictionRequest),
)
async def create_model_prediction(
    started: StartedDep, found: ServicesDep, who: CallerDep, _model: Annotated[None, Depends(_this_model)],
    wait: PreferWaitDep, body: Annotated[ModelPredictionRequest, JsonBody(ModelPredictionRequest)],
    base: BaseUrlDep, hosts: OwnHostsDep,
) -> ReplicatePrediction:  # fmt: skip
    """replicate.run("black-forest-labs/flux-kontext-dev", ...) lands here; `Prefer: wait` holds the answer."""
    return await _create(found, who, body, wait, started, base, hosts)


@router.post("/v1/predictions", status_code=201, openapi_extra=json_request(VersionPredictionRequest))
async def create_prediction(
    started: StartedDep, found: ServicesDep, who: CallerDep, wait: PreferWaitDep,
    body: Annotated[VersionPredictionRequest, JsonBody(VersionPredictionRequest)], base: BaseUrlDep,
    hosts: OwnHostsDep,
) -> ReplicatePrediction:  # fmt: skip
    return await _create(found, who, body, wait, started, base, hosts)


async def _create(
    found: Services, who: Caller, body: CreateRequest, wait: float, started: float, base: str, hosts: set[str]
) -> ReplicatePrediction:
    webhook = body.webhook
    try:
        prediction = await found.runner.create(
            who,
            body.edit_input,
            base_url=base,
            own_hosts=hosts,
            webhook_url=webhook,
            webhook_secret=WebhookSecrets(found.sessions).default_for(who.key_id) if webhook else None,
            webhook_format=WEBHOOK_FORMAT if webhook else None,
            webhook_events=body.webhook_events_filter,
        )
    except InputError as error:  # an image or the webhook refused: named by their field
        raise their_error(error) from None
    if wait > 0:
        prediction = await found.runner.wait(prediction.id, wait - (time.monotonic() - started))
    return still_starting(prediction_view(found, prediction, base), prediction)


@router.get("/v1/predictions/{prediction_id}")
async def get_prediction(
    found: ServicesDep, who: CallerDep, seconds: WaitDep, predictions: CallerPredictionsDep, prediction_id: str,
    base: BaseUrlDep,
) -> ReplicatePrediction:  # fmt: skip
    """The prediction; with ?wait=N or `Prefer: wait=N` once it has ended, or after N seconds."""
    return prediction_view(found, await predictions.wait(prediction_id, seconds), base)


@router.post("/v1/predictions/{prediction_id}/cancel", openapi_extra=json_request(NoBody, required=False))
async def cancel_prediction(
    found: ServicesDep, predictions: CallerPredictionsDep, prediction_id: str, base: BaseUrlDep
) -> ReplicatePrediction:
    return prediction_view(found, await predictions.cancel(prediction_id), base)


@router.get("/v1/predictions")
async def list_predictions(
    request: Request,
    found: ServicesDep,
    predictions: CallerPredictionsDep,
    base: BaseUrlDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> ReplicatePredictionList:
    """The caller's predictions, newest first; `next` is the URL of the next page."""
    page = predictions.page(limit, cursor)
    return ReplicatePredictionList(
        previous=None,
        next=str(request.url.include_query_params(cursor=page.next_cursor)) if page.next_cursor else None,
        results=[prediction_view(found, p, base) for p in page.predictions],
    )
