"""The stdio server: one client for the process, with the key it was started with; local files readable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver import Context

from .server_client import ServerClient
from .tools import build_server

HINT = " Is `fluxedit serve` running there? Set --server or FLUXEDIT_BASE_URL in the assistant's MCP configuration."


class OwnKeyConnection:
    """Every call uses the key and server `fluxedit mcp` was started with; its user's files may be read."""

    local_files = True
    hint = HINT

    def __init__(self, client: ServerClient):
        self._client = client

    @contextmanager
    def client(self, ctx: Context) -> Iterator[ServerClient]:
        yield self._client  # shared by the calls (httpx's client is thread-safe), closed when the process ends


def serve_stdio(server_url: str, api_key: str | None) -> None:
    with ServerClient(server_url, api_key) as client:
        build_server(OwnKeyConnection(client)).run("stdio")
