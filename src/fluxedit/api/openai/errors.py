"""Errors as OpenAI answers them: {"error": {message, type, param, code}}, which its client raises by status."""

from __future__ import annotations

import re

from ..errors import ErrorShape, error_responses
from .protocol import OpenAIError

DEFAULT_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}


def openai_error(status: int, message: str, field: str | None, code: str | None) -> tuple[int, dict]:
    if status == 422:
        status = 400  # OpenAI answers a bad parameter with 400 (the client's BadRequestError)
    if status == 402:
        status, code = 429, "insufficient_quota"  # how OpenAI reports spent credit (RateLimitError)
    if status >= 500:
        kind = "server_error"
    elif code == "insufficient_quota":
        kind = "insufficient_quota"
    elif status == 429:
        kind = "requests"
    else:
        kind = "invalid_request_error"
    code = code or DEFAULT_CODES.get(status) or ("invalid_value" if field else None)
    return status, {"error": {"message": message, "type": kind, "param": field, "code": code}}


ERROR_SHAPE = ErrorShape(re.compile(r"^/v1/images/"), openai_error)
OPENAI_ERRORS = error_responses(OpenAIError, openai_error)
