"""A finished prediction as OpenAI's ImagesResponse, or the OpenAI error its failure is."""

from __future__ import annotations

import asyncio
import base64

from ...schema import Status
from ...service.services import Services
from ...service.urls import output_url
from ...store.models import Prediction
from ..errors import ApiError
from .protocol import ImageData, ImagesResponse


async def images_response(
    services: Services, prediction: Prediction, base_url: str, response_format: str
) -> ImagesResponse:
    if prediction.status != Status.success:
        raise _failure(prediction)
    data, content_type = [], "image/png"
    present = services.files.present(prediction.output or [])
    for file_id in prediction.output or []:
        if file_id not in present:
            continue  # deleted since it was made: left out, never a broken URL
        content_type = present[file_id].content_type
        if response_format == "url":
            data.append(ImageData(url=output_url(base_url, file_id, content_type)))
            continue
        try:
            image = await asyncio.to_thread(services.files.read, file_id)
        except FileNotFoundError:
            continue
        data.append(ImageData(b64_json=base64.b64encode(image).decode()))
    return ImagesResponse(
        created=int(prediction.created_at.timestamp()),
        data=data,
        output_format=content_type.removeprefix("image/"),
        size=f"{prediction.width}x{prediction.height}",
    )


def _failure(prediction: Prediction) -> ApiError:
    ref = f" (prediction {prediction.id})"
    if prediction.status == Status.error and prediction.error_code == "PROVIDER_REJECTED":
        return ApiError(400, f"{prediction.error_message}{ref}", code="moderation_blocked")
    if prediction.status == Status.error:
        return ApiError(500, f"{prediction.error_message}{ref}", code=(prediction.error_code or "error").lower())
    if prediction.status == Status.cancelled:
        return ApiError(400, f"the edit was cancelled{ref}", code="cancelled")
    return ApiError(504, f"the edit did not finish in time; it goes on as prediction {prediction.id}", code="timeout")
