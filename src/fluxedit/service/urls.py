"""Absolute URLs of a prediction's resources, from the base URL a client used."""

from __future__ import annotations

from ..store.files import EXTENSIONS

OUTPUT_EXTENSIONS = {"jpg", "png", "webp"}
# A data URI sent as an input is stored as a file; the prediction's input keeps this path in its place.
# No caller can send it (a relative URL is refused), so it always means "the file we stored".
STORED_FILE_PREFIX = "/v1/files/"


def output_url(base_url: str, file_id: str, content_type: str) -> str:
    return f"{base_url}/outputs/{file_id}.{EXTENSIONS[content_type]}"


def file_content_url(base_url: str, file_id: str) -> str:
    return f"{base_url}/v1/files/{file_id}/content"


def stored_file_reference(file_id: str) -> str:
    return f"{STORED_FILE_PREFIX}{file_id}/content"


def stored_file_id(reference: str) -> str | None:
    """The file id a stored reference names, or None for a reference the caller sent as it is."""
    if not reference.startswith(STORED_FILE_PREFIX):
        return None
    return reference.removeprefix(STORED_FILE_PREFIX).partition("/")[0] or None


def prediction_urls(base_url: str, prediction_id: str) -> dict[str, str]:
    root = f"{base_url}/v1/prediction/{prediction_id}"
    return {"get": root, "cancel": f"{root}/cancel", "stream": f"{root}/stream"}
