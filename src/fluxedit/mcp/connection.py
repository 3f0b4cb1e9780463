"""How a tool call reaches the fluxedit server: which client (address and key), and what it may read locally."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from mcp.server.mcpserver import Context

from .server_client import ServerClient


class Connection(Protocol):
    local_files: bool  # may an image or zip argument name a file of this machine (stdio: the user's own)
    hint: str  # appended to "could not reach the server": how to point this MCP server elsewhere

    def client(self, ctx: Context) -> AbstractContextManager[ServerClient]:
        """The client to use for this tool call (the caller's key, over HTTP)."""
        ...
