"""Absolute URLs of a prediction's resources, from the base URL a client used."""

from __future__ import annotations

from ..store.files import EXTENSIONS

OUTPUT_EXTENSIONS = {"jpg", "png", "webp"}


def output_url(base_url: str, file_id: str, content_type: str) -> str:
    return f"{base_url}/outputs/{file_id}.{EXTENSIONS[content_type]}"


def prediction_urls(base_url: str, prediction_id: str) -> dict[str, str]:
    root = f"{base_url}/v1/prediction/{prediction_id}"
    return {"get": root, "cancel": f"{root}/cancel", "stream": f"{root}/stream"}
