"""Every request body is counted while it streams, and refused with 413 naming the limit once past it.

The limit follows what an endpoint takes: a JSON request, one image upload, the images of an OpenAI edit,
a LoRA file, a training zip, a batch's zip of images. A declared Content-Length past it is refused before a
byte is read; a chunked body is cut off as soon as it passes it. The error is raised from `receive`, inside
the endpoint that reads the body, so the app's error handlers answer it in the dialect's own shape; it closes
the connection, so the rest of the body is never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from .errors import ApiError
from .openai.images import MAX_IMAGES
from .seed.batches import MAX_ZIP_BYTES as MAX_BATCH_ZIP_BYTES
from .seed.trainings import MAX_DATA_BYTES
from .uploads import MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD


@dataclass(frozen=True)
class BodyLimit:
    path: re.Pattern[str]
    max_bytes: int
    what: str  # "an image upload (...)": who the limit is for, in the message
    multipart_only: bool = False  # the endpoint also takes JSON, which has the JSON limit


def body_limits(settings: Settings) -> tuple[list[BodyLimit], BodyLimit]:
    """The limits by endpoint, and the one for everything else (JSON requests)."""
    image = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
    form = f"{size_text(MULTIPART_OVERHEAD)} of form fields"
    by_endpoint = [
        # multipart_only: a JSON or urlencoded body is read whole into memory, so it keeps the JSON limit.
        BodyLimit(
            _path("/v1/files"),
            image,
            f"an image upload ({size_text(MAX_UPLOAD_BYTES)} and {form})",
            multipart_only=True,
        ),
        BodyLimit(
            _path("/v1/images/edits"),
            MAX_IMAGES * image,
            f"an image edit ({MAX_IMAGES} images of {size_text(MAX_UPLOAD_BYTES)} and {form} each)",
            multipart_only=True,
        ),
        BodyLimit(
            _path("/v1/loras"),
            settings.lora_max_bytes + MULTIPART_OVERHEAD,
            f"a LoRA upload ({size_text(settings.lora_max_bytes)}, FLUXEDIT_LORA_MAX_BYTES, and {form})",
            multipart_only=True,
        ),
        BodyLimit(
            _path("/v1/trainings"),
            MAX_DATA_BYTES + MULTIPART_OVERHEAD,
            f"a training upload (a zip of {size_text(MAX_DATA_BYTES)} and {form})",
            multipart_only=True,
        ),
        BodyLimit(
            _path("/v1/batches"),
            MAX_BATCH_ZIP_BYTES + MULTIPART_OVERHEAD,
            f"a batch upload (a zip of {size_text(MAX_BATCH_ZIP_BYTES)} and {form})",
            multipart_only=True,  # a JSON batch (URLs, file ids) has the JSON limit
        ),
    ]
    json_limit = BodyLimit(re.compile(""), settings.max_json_bytes, "a JSON request (FLUXEDIT_MAX_JSON_BYTES)")
    return by_endpoint, json_limit


def install_body_limits(app: FastAPI, settings: Settings) -> None:
    by_endpoint, default = body_limits(settings)
    app.add_middleware(BodyLimitMiddleware, by_endpoint=by_endpoint, default=default)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, by_endpoint: list[BodyLimit], default: BodyLimit):
        self.app = app
        self.by_endpoint = by_endpoint
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, counted_receive(receive, self._limit_for(scope), _declared_length(scope)), send)

    def _limit_for(self, scope: Scope) -> BodyLimit:
        multipart = _header(scope, b"content-type").lower().startswith("multipart/")
        for limit in self.by_endpoint:
            if limit.path.match(scope["path"]) and (multipart or not limit.multipart_only):
                return limit
        return self.default


def counted_receive(receive: Receive, limit: BodyLimit, declared: int | None) -> Receive:
    """`receive`, refusing the body once it passes the limit (or at once when its declared length does)."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        if seen > limit.max_bytes or (declared is not None and declared > limit.max_bytes):
            raise too_large(limit)
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit.max_bytes:
                raise too_large(limit)
        return message

    return counted


def too_large(limit: BodyLimit) -> ApiError:
    message = f"request body: is larger than {size_text(limit.max_bytes)}, the most for {limit.what}"
    return ApiError(413, message, {"Connection": "close"}, code="request_too_large")


def size_text(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def _path(path: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(path)}/?$")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _declared_length(scope: Scope) -> int | None:
    length = _header(scope, b"content-length").strip()
    return int(length) if length.isdigit() else None
