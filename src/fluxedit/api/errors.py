"""Request errors answer {"error": "<message for a person>"} with a fitting status.

A dialect whose clients expect another shape (Replicate's problem details, OpenAI's error object)
registers an ErrorShape for its paths; the message and the status come from the same handlers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException

from ..schema import InputError, input_error_from
from ..service.admission import SpendingLimitReached, TooManyRequests
from ..service.caller_predictions import PredictionNotFound
from ..service.intake import KeyRequired, NoWorkers
from ..service.quota import QuotaExceeded

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *, code: str | None = None):
        self.status = status
        self.message = message
        self.headers = headers
        self.code = code  # a machine-readable reason, for dialects whose error shape has one
        super().__init__(message)


class SeedError(BaseModel):
    """Every error of the seed dialect: one message for a person, naming the field and the limit it broke."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "input.num_images: must be at most 4"}]})

    error: str


Render = Callable[[int, str, str | None, str | None], tuple[int, dict]]


@dataclass(frozen=True)
class ErrorShape:
    """How a dialect answers errors on its paths: (status, message, field, code) -> (status, JSON body)."""

    paths: re.Pattern[str]
    render: Render


def seed_error(status: int, message: str, _field: str | None, _code: str | None) -> tuple[int, dict]:
    return status, {"error": message}


# The statuses an endpoint may answer with an error, and when; each dialect documents them in its own shape.
ERROR_STATUSES = {
    400: "The request body is not what the endpoint reads (not JSON, not a multipart form, nested too deep).",
    401: "No API key, or one that is unknown or revoked.",
    402: "The key's spending limit is reached.",
    404: "No such prediction, file, model, LoRA or training for this key (or no such route).",
    405: "The route does not take this method.",
    409: "The request conflicts with the resource's state (a name taken, a file still in use, no LoRA yet).",
    413: "The body, a file or the key's storage quota is larger than its limit.",
    422: "An input is invalid: the message names the field and the limit.",
    429: "Too many requests, or the queue is full: retry after the Retry-After header's seconds.",
    500: "An unexpected error (the server logged the details), or the edit itself failed.",
    503: "No worker is running.",
    504: "The edit did not finish in time.",
    507: "The server's storage is full.",
}
ERROR_EXAMPLES = {
    400: "request body: is not valid JSON (Expecting value: line 1 column 1 (char 0))",
    401: "the API key is not valid (unknown or revoked)",
    402: "this prediction ($0.025) would pass this key's $1.00 spending limit: $0.975 spent and $0.025 reserved "
    "by its queued and running predictions",
    404: "prediction p_123 not found",
    405: "Method Not Allowed",
    409: "name: a LoRA named 'style' exists already; delete it first",
    413: "request body: is larger than 72 MB, the most for a JSON request (FLUXEDIT_MAX_JSON_BYTES)",
    422: "input.num_images: must be at most 4 (got 9)",
    429: "the queue is full (256 predictions waiting, at most 256); retry later",
    500: "internal error: the server logged the details",
    503: "no worker can run predictions: the model could not be loaded",
    504: "the edit did not finish in time; it goes on as prediction p_123",
    507: "the server's storage is full: 100 GB of its 100 GB are used",
}


# Error model name -> answered status -> its examples. FastAPI drops every null from the document it writes,
# which would leave examples that break their own schema ("param": null): docs.py puts these back.
ERROR_EXAMPLES_BY_MODEL: dict[str, dict[int, dict[str, dict]]] = {}


def error_responses(model: type[BaseModel], render: Render, statuses=tuple(ERROR_STATUSES)) -> dict[int, dict]:
    """The OpenAPI `responses` of a dialect's errors: its error model, with a real example for each status."""
    documented: dict[int, dict] = {}
    examples = ERROR_EXAMPLES_BY_MODEL.setdefault(model.__name__, {})
    for status in statuses:
        field = "input.num_images" if status == 422 else None
        shown_status, example = render(status, ERROR_EXAMPLES[status], field, None)
        examples.setdefault(shown_status, {})[str(status)] = {"value": example}
        documented.setdefault(shown_status, {"model": model, "description": ERROR_STATUSES[shown_status]})
    for shown_status, entry in documented.items():
        entry["content"] = {"application/json": {"examples": examples[shown_status]}}
    return documented


SEED_ERRORS = error_responses(SeedError, seed_error)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def install_error_handlers(app: FastAPI, shapes: Sequence[ErrorShape] = ()) -> None:
    def reply(
        request: Request,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        field: str | None = None,
        code: str | None = None,
    ) -> JSONResponse:
        for shape in shapes:
            if shape.paths.match(request.scope["path"]):  # as routed: url.path drops tabs and newlines
                status, body = shape.render(status, message, field, code)
                return JSONResponse(body, status_code=status, headers=headers)
        status, body = seed_error(status, message, field, code)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return reply(request, error.status, error.message, error.headers, code=error.code)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, error: InputError):
        return reply(request, 422, str(error), field=error.field)

    @app.exception_handler(ValidationError)  # a model of ours refused a value no checker caught first
    async def _model_error(request: Request, error: ValidationError):
        problem = input_error_from(error)
        return reply(request, 422, str(problem), field=problem.field)

    @app.exception_handler(PredictionNotFound)
    async def _no_prediction(request: Request, error: PredictionNotFound):
        return reply(request, 404, str(error))

    @app.exception_handler(TooManyRequests)  # a full queue, a rate limit: both free up with time
    async def _too_many(request: Request, error: TooManyRequests):
        return reply(request, 429, str(error), {"Retry-After": str(error.retry_after)}, code=error.code)

    @app.exception_handler(SpendingLimitReached)
    async def _limit(request: Request, error: SpendingLimitReached):
        return reply(request, 402, str(error), code="spending_limit_reached")

    @app.exception_handler(KeyRequired)
    async def _key_required(request: Request, error: KeyRequired):
        return reply(request, 401, str(error), {"WWW-Authenticate": "Bearer"}, code="key_required")

    @app.exception_handler(NoWorkers)
    async def _no_workers(request: Request, error: NoWorkers):
        return reply(request, 503, str(error), code="no_workers")

    @app.exception_handler(QuotaExceeded)  # 507 when the server's storage is full, 413 for one key's quota
    async def _quota(request: Request, error: QuotaExceeded):
        return reply(request, error.status, str(error), code=error.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        message = input_error_from_dict(first, location)
        return reply(request, 422, message, field=location)

    @app.exception_handler(HTTPException)  # Starlette's: also an unknown route (404) and a wrong method (405)
    async def _http(request: Request, error: HTTPException):
        return reply(request, error.status_code, str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error")
        return reply(request, 500, "internal error: the server logged the details")


def input_error_from_dict(first: dict, location: str) -> str:
    kind = first.get("type", "")
    if kind == "missing":
        return f"{location}: is required"
    return f"{location}: {first.get('msg', 'is invalid')}"
