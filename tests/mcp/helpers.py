"""MCP clients of the SDK itself, over stdio (`fluxedit mcp`) and streamable HTTP, and a small test image."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image

from tests.service.server import Server, free_port

EDIT_TOOLS = {"edit_image", "get_prediction", "list_loras", "start_training", "training_status"}


def photo_png(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def photo_base64() -> str:
    return base64.b64encode(photo_png()).decode()


@asynccontextmanager
async def stdio_session(command: list[str], server_url: str, api_key: str | None, log: Path) -> AsyncIterator[Client]:
    """`fluxedit mcp` started by the SDK's stdio client, configured through the environment as an assistant's
    MCP configuration would; its stderr goes to `log`."""
    env = {"FLUXEDIT_BASE_URL": server_url}
    if api_key:
        env["FLUXEDIT_API_KEY"] = api_key
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with log.open("a") as errlog:
        async with Client(stdio_client(parameters, errlog=errlog)) as client:
            yield client


@asynccontextmanager
async def http_session(url: str, api_key: str | None, header: str = "Authorization") -> AsyncIterator[Client]:
    """The key as `Authorization: Bearer KEY`, or with header="X-API-Key" in that header."""
    headers = {}
    if api_key:
        headers[header] = f"Bearer {api_key}" if header == "Authorization" else api_key
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def texts(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def images(result: CallToolResult) -> list[Image.Image]:
    decoded = []
    for block in result.content:
        if isinstance(block, ImageContent):
            picture = Image.open(io.BytesIO(base64.b64decode(block.data)))
            picture.load()
            decoded.append(picture)
    return decoded


class MountedServer(Server):
    """The API with MCP mounted (tests/mcp/mounted_server.py), in a process of its own like `fluxedit serve`."""

    def start(self, wait_ready: bool = True) -> MountedServer:
        log = self.log_path.open("ab")
        args = [sys.executable, "-m", "tests.mcp.mounted_server", str(self.port), str(self.data_dir)]
        root = Path(__file__).resolve().parents[2]
        env = {**self.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), self.env.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(args, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self


def mcp_is_mounted(server: Server) -> bool:
    """Whether /mcp is served at all: an unknown path answers 404, the MCP endpoint never does."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return httpx.post(server.url + "/mcp", json={}, timeout=5).status_code != 404
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise


__all__ = ["EDIT_TOOLS", "MountedServer", "free_port", "http_session", "images", "photo_base64", "photo_png",
           "stdio_session", "texts"]  # fmt: skip
