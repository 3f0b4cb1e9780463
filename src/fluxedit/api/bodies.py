"""JSON request bodies, read with a size limit and refused with a clear message."""

from __future__ import annotations

import json

from fastapi import Request

from .errors import ApiError

MAX_JSON_BYTES = 72 * 1024 * 1024  # a 50 MB image as a data URI, plus room for the rest


async def json_body(request: Request) -> dict:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise ApiError(413, f"request body: is larger than {MAX_JSON_BYTES // 2**20} MB")
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body: is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body: must be a JSON object")
    return body
