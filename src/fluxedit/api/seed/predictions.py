"""POST /v1/prediction and friends: create, run, get (long-poll), cancel, list, stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from ...store.models import Prediction
from ..bodies import JsonBody, NoBody, json_request
from ..deps import BaseUrlDep, CallerDep, CallerPredictionsDep, OwnHostsDep, ServicesDep, WaitDep
from ..docs import event_stream_response
from ..errors import SEED_ERRORS
from ..streams import prediction_events
from .protocol import Prediction as PredictionView
from .protocol import PredictionCreated, PredictionList, PredictionRequest
from .views import prediction_view

router = APIRouter(prefix="/v1/prediction", tags=["predictions"], responses=SEED_ERRORS)
PredictionBody = Annotated[PredictionRequest, JsonBody(PredictionRequest)]
EVENT_STREAM = event_stream_response(
    "Server-Sent Events; each data is JSON: status {id, status}, progress {step, total}, preview {step, image}, "
    "output (the prediction), done {status}",
    ("status", "progress", "preview", "output", "done"),
)


@router.post("", openapi_extra=json_request(PredictionRequest))
async def create_prediction(
    found: ServicesDep, who: CallerDep, body: PredictionBody, base: BaseUrlDep, hosts: OwnHostsDep
) -> PredictionCreated:
    """Create a prediction; answers at once with its id (GET it, or its stream, for the rest)."""
    prediction = await _create(found, who, body, base, hosts)
    return PredictionCreated(predictionID=prediction.id)


@router.post("/run", openapi_extra=json_request(PredictionRequest))
async def run_prediction(
    found: ServicesDep, who: CallerDep, body: PredictionBody, base: BaseUrlDep, hosts: OwnHostsDep
) -> PredictionView:
    """Create a prediction and answer when it has ended."""
    prediction = await _create(found, who, body, base, hosts)
    ended = await found.runner.wait(prediction.id, found.settings.execution_timeout + 60)
    return prediction_view(found, ended, base)


async def _create(found, who, body: PredictionRequest, base: str, hosts: set[str]) -> Prediction:
    return await found.runner.create(
        who,
        body.input,
        base_url=base,
        own_hosts=hosts,
        webhook_url=body.webhook_url,
        webhook_secret=body.webhook_secret,
        version=body.version,
    )


@router.get("/{prediction_id}")
async def get_prediction(
    found: ServicesDep, who: CallerDep, seconds: WaitDep, predictions: CallerPredictionsDep, prediction_id: str,
    base: BaseUrlDep,
) -> PredictionView:  # fmt: skip
    """The prediction; with ?wait=N (or Prefer: wait=N) once it has ended, or after N seconds."""
    return prediction_view(found, await predictions.wait(prediction_id, seconds), base)


@router.post("/{prediction_id}/cancel", openapi_extra=json_request(NoBody, required=False))
async def cancel_prediction(
    found: ServicesDep, predictions: CallerPredictionsDep, prediction_id: str, base: BaseUrlDep
) -> PredictionView:
    return prediction_view(found, await predictions.cancel(prediction_id), base)


@router.get("")
async def list_predictions(
    request: Request,
    found: ServicesDep,
    predictions: CallerPredictionsDep,
    base: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> PredictionList:
    """The caller's predictions, newest first; `next_cursor` fetches the next page."""
    page = predictions.page(limit, cursor)
    return PredictionList(
        data=[prediction_view(found, p, base) for p in page.predictions],
        next_cursor=page.next_cursor,
        next=str(request.url.include_query_params(cursor=page.next_cursor)) if page.next_cursor else None,
    )


@router.get("/{prediction_id}/stream", response_class=StreamingResponse, responses=EVENT_STREAM)
async def stream_prediction(
    found: ServicesDep,
    predictions: CallerPredictionsDep,
    prediction_id: str,
    base: BaseUrlDep,
    previews: Annotated[bool, Query(description="Also send a small JPEG preview after each step.")] = False,
) -> StreamingResponse:
    """Server-Sent Events: status, progress (step i of N), optional previews, then the output."""
    predictions.get(prediction_id)
    events = prediction_events(found, prediction_id, base, previews, prediction_view)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
