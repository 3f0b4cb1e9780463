"""Predictions as Replicate shows them: its five statuses, one output URL, its field names."""

from __future__ import annotations

from ...schema import ENDED_STATUSES, Status
from ...service.services import Services
from ...service.webhook_outbox import iso
from ...store.models import Prediction
from ..seed.views import shown_files
from .inputs import MODEL_NAME, from_edit_input, their_message
from .protocol import ReplicatePrediction, ReplicatePredictionUrls, ReplicateStatus

STATUSES: dict[Status, ReplicateStatus] = {
    Status.created: "starting",
    Status.starting: "starting",
    Status.processing: "processing",
    Status.success: "succeeded",
    Status.error: "failed",
    Status.cancelled: "canceled",
}


def prediction_urls(base_url: str, prediction_id: str) -> ReplicatePredictionUrls:
    # No "stream" URL: the client would expect Replicate's token stream, which an image model has not.
    root = f"{base_url}/v1/predictions/{prediction_id}"
    return ReplicatePredictionUrls(get=root, cancel=f"{root}/cancel")


def prediction_view(services: Services, prediction: Prediction, base_url: str) -> ReplicatePrediction:
    files = shown_files(services, prediction, base_url)
    output = None
    if prediction.status == Status.success and files.output_urls:
        urls = files.output_urls
        output = urls[0] if len(urls) == 1 else urls  # the model returns one URL string
    metrics = {}
    if (predict_time := (prediction.metrics or {}).get("predict_time")) is not None:
        metrics["predict_time"] = predict_time
    if prediction.completed_at is not None:
        total = prediction.completed_at - prediction.created_at
        metrics["total_time"] = round(total.total_seconds(), 4)
    return ReplicatePrediction(
        id=prediction.id,
        model=MODEL_NAME,
        version=prediction.version,
        input=from_edit_input(files.input),
        status=STATUSES[prediction.status],
        output=output,
        error=their_message(prediction.error_message) if prediction.status == Status.error else None,
        logs=prediction.logs,
        metrics=metrics,
        urls=prediction_urls(base_url, prediction.id),
        data_removed=files.data_removed,
        created_at=iso(prediction.created_at),
        started_at=iso(prediction.started_at),
        completed_at=iso(prediction.completed_at),
    )


def still_starting(view: ReplicatePrediction, prediction: Prediction) -> ReplicatePrediction:
    """A create answer whose wait ran out shows 'starting', as Replicate's does: its client polls on that
    status but takes any other as the end of a blocking call."""
    if prediction.status not in ENDED_STATUSES:
        view.status = "starting"
    return view
