"""Request errors answer {"error": "<message for a person>"} with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..schema import InputError
from ..service.runner import NoWorkers, QueueFull, SpendingLimitReached

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status = status
        self.message = message
        self.headers = headers
        super().__init__(message)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError):
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, error: InputError):
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, error: QueueFull):
        return JSONResponse({"error": str(error)}, status_code=429, headers={"Retry-After": "10"})

    @app.exception_handler(SpendingLimitReached)
    async def _limit(_request: Request, error: SpendingLimitReached):
        return JSONResponse({"error": str(error)}, status_code=402)

    @app.exception_handler(NoWorkers)
    async def _no_workers(_request: Request, error: NoWorkers):
        return JSONResponse({"error": str(error)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        message = input_error_from_dict(first, location)
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception):
        log.exception("unexpected error")
        return JSONResponse({"error": "internal error: the server logged the details"}, status_code=500)


def input_error_from_dict(first: dict, location: str) -> str:
    kind = first.get("type", "")
    if kind == "missing":
        return f"{location}: is required"
    return f"{location}: {first.get('msg', 'is invalid')}"
