"""The MCP server over streamable HTTP, mounted under the API at /mcp, behind the API's own keys.

A request to /mcp passes the same key check as every /v1/ request (401 in the seed's error shape when a key
is needed and missing or wrong); the tools then call this same server over HTTP with the caller's key, so
what a key may see, its limits and its spending are checked exactly as for the API. Stateless: every request
stands alone, so it works behind several API replicas without sticky sessions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio.to_thread
from fastapi import FastAPI
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.deps import caller
from ..api.errors import ApiError
from ..config import Settings
from ..service.access import is_loopback_host
from .server_client import ServerClient
from .tools import build_server

PATH = "/mcp"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def mount_mcp(app: FastAPI, settings: Settings) -> None:
    """Serve MCP at /mcp and run its session manager inside the app's lifespan (a mounted app's own lifespan
    never runs). Call it from the app factory, after the lifespan is set."""
    server = build_server(CallerConnection())
    server.streamable_http_app(  # builds server.session_manager; the Starlette app it returns is not used
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=_transport_security(settings),
        max_request_body_size=settings.max_json_bytes,
    )
    manager = server.session_manager
    app.add_route(PATH, KeyCheck(app, manager.asgi_app), include_in_schema=False)
    api_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: FastAPI) -> AsyncIterator[object]:
        async with api_lifespan(host) as state, manager.run():  # MCP stops first, while the services still run
            yield state

    app.router.lifespan_context = lifespan


class KeyCheck:
    """The API's own key check in front of the MCP endpoint."""

    def __init__(self, app: FastAPI, inner: ASGIApp):
        self.app = app
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:  # a database read, off the event loop (as FastAPI runs the API's own check)
                await anyio.to_thread.run_sync(caller, request, self.app.state.services, None, None)
            except ApiError as refused:
                await JSONResponse({"error": refused.message}, refused.status, refused.headers)(scope, receive, send)
                return
        await self.inner(scope, receive, send)


class CallerConnection:
    """Each call uses the key its HTTP request carried, against the address that request came in on."""

    local_files = False  # this process is the server: its files are not the caller's
    hint = ""

    @contextmanager
    def client(self, ctx: Context) -> Iterator[ServerClient]:
        request = ctx.request_context.request
        if not isinstance(request, Request):
            raise RuntimeError("the HTTP MCP endpoint got a call without its HTTP request")
        with ServerClient(_own_address(request), _presented_key(request)) as client:
            yield client


def _own_address(request: Request) -> str:
    """This server as the socket the request arrived on (never a Host header the caller chose)."""
    host, port = request.scope["server"]
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}"


def _presented_key(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def _transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection while the server listens on loopback and may take keyless calls; beyond
    loopback every call needs a key, which a rebinding page does not have."""
    if not is_loopback_host(settings.host):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = [f"{host}:*" for host in LOOPBACK_HOSTS]
    origins = [f"http://{host}:*" for host in LOOPBACK_HOSTS]
    if settings.public_url:
        public = settings.public_url.rstrip("/").split("://", 1)[-1].split("/", 1)[0]
        hosts.append(public)
        origins.append(settings.public_url.rstrip("/"))
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)
