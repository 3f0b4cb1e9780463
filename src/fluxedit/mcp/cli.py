"""`fluxedit mcp`: the MCP server over stdio, for desktop assistants, against a fluxedit server.

Only typer and the standard library are imported at module level: `fluxedit --help` imports this file.
"""

from __future__ import annotations

from typing import Annotated

import typer

DEFAULT_SERVER = "http://127.0.0.1:8000"


def mcp_command(
    server: Annotated[
        str,
        typer.Option(
            "--server",
            envvar="FLUXEDIT_BASE_URL",
            help="The fluxedit server the tools call (`fluxedit serve`).",
        ),
    ] = DEFAULT_SERVER,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="FLUXEDIT_API_KEY",
            help="The server's API key (not needed by a keyless server on this machine).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the Model Context Protocol over stdio: AI assistants edit images, list LoRAs and train them through
    the tools edit_image, get_prediction, list_loras, start_training and training_status (docs/mcp.md)."""
    from .stdio import serve_stdio  # the MCP SDK and pydantic load only now

    serve_stdio(server, api_key)
