"""Request errors answer {"error": "<message for a person>"} with a fitting status.

A dialect whose clients expect another shape (Replicate's problem details, OpenAI's error object)
registers an ErrorShape for its paths; the message and the status come from the same handlers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..schema import InputError
from ..service.admission import SpendingLimitReached, TooManyRequests
from ..service.quota import QuotaExceeded
from ..service.runner import KeyRequired, NoWorkers

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *, code: str | None = None):
        self.status = status
        self.message = message
        self.headers = headers
        self.code = code  # a machine-readable reason, for dialects whose error shape has one
        super().__init__(message)


@dataclass(frozen=True)
class ErrorShape:
    """How a dialect answers errors on its paths: (status, message, field, code) -> (status, JSON body)."""

    paths: re.Pattern[str]
    render: Callable[[int, str, str | None, str | None], tuple[int, dict]]


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
            if shape.paths.match(request.url.path):
                status, body = shape.render(status, message, field, code)
                return JSONResponse(body, status_code=status, headers=headers)
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return reply(request, error.status, error.message, error.headers, code=error.code)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, error: InputError):
        return reply(request, 422, str(error), field=error.field)

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

    @app.exception_handler(HTTPException)
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
