"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), working without internet access.

fastapi-offline serves both from files in its package instead of a CDN. The pages' own policy then keeps
them on this server: ReDoc's sidebar would still fetch its maker's logo from outside on every visit.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from .bodies import DOCUMENTED_MODELS
from .errors import ERROR_EXAMPLES_BY_MODEL

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

# Both pages start with an inline script; ReDoc renders in a blob: worker. Nothing else leaves this server.
DOCS_CONTENT_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def binary_response(description: str, *media_types: str) -> dict[int, dict]:
    """The OpenAPI `responses` of an endpoint that answers a file's bytes."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": {media: binary for media in media_types}}}


def event_stream_response(description: str, events: tuple[str, ...]) -> dict[int, dict]:
    """The OpenAPI `responses` of a Server-Sent Events stream: each event's name, and its data (JSON text)."""
    event = {
        "type": "object",
        "properties": {"event": {"type": "string", "enum": list(events)}, "data": {"type": "string"}},
        "required": ["event", "data"],
    }
    return {200: {"description": description, "content": {"text/event-stream": {"schema": event}}}}


def documented_app(**kwargs) -> FastAPI:
    """A FastAPI app (same arguments) whose /docs and /redoc need nothing from other hosts."""
    # No validator badge: it would send the schema's address to an outside validator.
    app = FastAPIOffline(swagger_ui_parameters={"validatorUrl": None}, **kwargs)
    app.add_middleware(DocsContentPolicy)
    _complete_openapi(app)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """/openapi.json with the bodies that handlers read themselves (bodies.request_body): their models join
    the components FastAPI wrote for the parameters and responses."""
    generate = app.openapi
    completed = False

    def openapi() -> dict:
        nonlocal completed
        schema = generate()
        if not completed:
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            models = [(model, "validation") for model in DOCUMENTED_MODELS.values()]
            _, defined = models_json_schema(models, ref_template="#/components/schemas/{model}")
            for name, definition in defined.get("$defs", {}).items():
                components.setdefault(name, definition)
            if "EditInput" in components:  # an engine option, not part of the API (as GET /v1/models shows it)
                components["EditInput"]["properties"].pop("write_metadata", None)
            _restore_error_examples(schema)
            completed = True
        return schema

    app.openapi = openapi


def _restore_error_examples(schema: dict) -> None:
    """Error examples as the errors are answered, nulls included (FastAPI's writer drops every null)."""
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            for status, answer in operation.get("responses", {}).items():
                body = answer.get("content", {}).get("application/json", {})
                model = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if model in ERROR_EXAMPLES_BY_MODEL and status.isdigit():
                    body["examples"] = ERROR_EXAMPLES_BY_MODEL[model][int(status)]


class DocsContentPolicy:
    """Adds the policy to the reference pages' answers (plain ASGI: streamed answers elsewhere pass untouched)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"content-security-policy", DOCS_CONTENT_POLICY.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_policy)
