"""Errors as Replicate answers them: RFC 7807 problem details, which its client raises as ReplicateError."""

from __future__ import annotations

import re
from http import HTTPStatus

from ..errors import ErrorShape, error_responses
from .protocol import ProblemDetails

TITLES = {401: "Unauthenticated", 404: "Not found", 422: "Input validation failed"}


def problem(status: int, message: str, field: str | None, _code: str | None) -> tuple[int, dict]:
    body = {"title": TITLES.get(status) or HTTPStatus(status).phrase, "detail": message, "status": status}
    if status == 422 and field:
        body["invalid_fields"] = [{"type": "invalid", "field": field, "description": message}]
    return status, body


# Its paths: /v1/predictions..., /v1/models/{owner}/{name}/..., /v1/webhooks/...
ERROR_SHAPE = ErrorShape(re.compile(r"^/v1/(predictions(/|$)|models/[^/]+/[^/]+|webhooks/)"), problem)
REPLICATE_ERRORS = error_responses(ProblemDetails, problem)
