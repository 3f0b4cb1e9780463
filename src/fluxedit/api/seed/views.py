"""Predictions as the seed dialect shows them."""

from __future__ import annotations

from dataclasses import dataclass

from ...schema import Status
from ...service.services import Services
from ...service.urls import file_content_url, output_url, prediction_urls, stored_file_id
from ...service.webhook_outbox import iso
from ...store.models import Prediction
from . import protocol


@dataclass(frozen=True)
class ShownFiles:
    """A prediction's files as every view shows them: what is still stored, and whether any was removed."""

    input: dict  # the stored input, each data URI it came with shown as the URL of the file it was stored as
    output_urls: list[str]  # of the outputs still stored, in order: a deleted one is left out, never a broken URL
    data_removed: bool  # some input or output file of it was deleted


def shown_files(services: Services, prediction: Prediction, base_url: str) -> ShownFiles:
    stored = dict(prediction.input or {})
    input_ids = list(prediction.input_files or [])
    mask_id = stored_file_id(stored["mask_url"]) if isinstance(stored.get("mask_url"), str) else None
    present = services.files.present([*input_ids, mask_id, *(prediction.output or [])])
    removed = any(file_id not in present for file_id in [*input_ids, *(prediction.output or [])] if file_id)
    references = [stored.get("image_url"), *(stored.get("image_urls") or [])]
    shown = []
    for index, reference in enumerate(references):
        kept, file_id = _kept_file(reference, input_ids[index] if index < len(input_ids) else None)
        if not kept:
            shown.append(reference)  # as the caller sent it: a URL, a file id
        else:
            shown.append(file_content_url(base_url, file_id) if file_id in present else None)
    if references:
        stored["image_url"] = shown[0]
    if stored.get("image_urls"):
        stored["image_urls"] = shown[1:]
    if mask_id is not None:  # a mask sent inline: shown as the file it was kept as (its greyscale form)
        stored["mask_url"] = file_content_url(base_url, mask_id) if mask_id in present else None
    outputs = [
        output_url(base_url, file_id, present[file_id].content_type)
        for file_id in prediction.output or []
        if file_id in present
    ]
    return ShownFiles(stored, outputs, removed)


def _kept_file(reference: object, input_id: str | None) -> tuple[bool, str | None]:
    """Whether the data itself was the input, and the file it was kept as: our stored reference, or (in rows
    written before inputs were kept as files) the data URI, whose file is the prediction's input file.
    A data URI is never shown back, even when its file is unknown."""
    if not isinstance(reference, str):
        return False, None
    if reference.startswith("data:"):
        return True, input_id
    file_id = stored_file_id(reference)
    return file_id is not None, file_id


def prediction_view(services: Services, prediction: Prediction, base_url: str) -> protocol.Prediction:
    files = shown_files(services, prediction, base_url)
    if prediction.status == Status.success:
        output = files.output_urls
    elif prediction.status == Status.error:
        output = protocol.PredictionFailure(error_code=prediction.error_code, error_message=prediction.error_message)
    else:
        output = None
    metrics = {"predict_time": None, "cost": prediction.cost, "queue_time": None, **(prediction.metrics or {})}
    return protocol.Prediction(
        id=prediction.id,
        model=prediction.model,
        version=prediction.version,
        input=files.input,
        status=prediction.status,
        output=output,
        seed=int(prediction.seed) if prediction.seed is not None else None,
        width=prediction.width,
        height=prediction.height,
        has_nsfw_concepts=prediction.has_nsfw_concepts,
        logs=prediction.logs,
        metrics=protocol.PredictionMetrics(**metrics),
        data_removed=files.data_removed,
        urls=protocol.PredictionUrls(**prediction_urls(base_url, prediction.id)),
        created_at=iso(prediction.created_at),
        started_at=iso(prediction.started_at),
        completed_at=iso(prediction.completed_at),
    )
