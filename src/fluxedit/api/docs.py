"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), working without internet access.

fastapi-offline serves both from files in its package instead of a CDN. The pages' own policy then keeps
them on this server: ReDoc's sidebar would still fetch its maker's logo from outside on every visit.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

# Both pages start with an inline script; ReDoc renders in a blob: worker. Nothing else leaves this server.
DOCS_CONTENT_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def documented_app(**kwargs) -> FastAPI:
    """A FastAPI app (same arguments) whose /docs and /redoc need nothing from other hosts."""
    # No validator badge: it would send the schema's address to an outside validator.
    app = FastAPIOffline(swagger_ui_parameters={"validatorUrl": None}, **kwargs)
    app.add_middleware(DocsContentPolicy)
    return app


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
