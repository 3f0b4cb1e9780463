"""Predictions as the seed dialect shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from ...service.services import Services
from ...service.urls import output_url, prediction_urls
from ...store.models import Prediction


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def output_urls(services: Services, prediction: Prediction, base_url: str) -> list[str]:
    urls = []
    for file_id in prediction.output or []:
        record = services.files.get(file_id)
        urls.append(output_url(base_url, file_id, record.content_type))
    return urls


def prediction_view(services: Services, prediction: Prediction, base_url: str) -> dict:
    if prediction.status == "success":
        output = output_urls(services, prediction, base_url)
    elif prediction.status == "error":
        output = {"error_code": prediction.error_code, "error_message": prediction.error_message}
    else:
        output = None
    metrics = {"predict_time": None, "cost": prediction.cost, "queue_time": None, **(prediction.metrics or {})}
    return {
        "id": prediction.id,
        "model": prediction.model,
        "version": prediction.version,
        "input": prediction.input,
        "status": prediction.status,
        "output": output,
        "seed": int(prediction.seed) if prediction.seed is not None else None,
        "width": prediction.width,
        "height": prediction.height,
        "has_nsfw_concepts": prediction.has_nsfw_concepts,
        "logs": prediction.logs,
        "metrics": metrics,
        "urls": prediction_urls(base_url, prediction.id),
        "created_at": iso(prediction.created_at),
        "started_at": iso(prediction.started_at),
        "completed_at": iso(prediction.completed_at),
    }
