"""`python -m fluxedit.mcp`: the same stdio server as `fluxedit mcp`, for configurations that name a Python."""

import typer

from .cli import mcp_command

if __name__ == "__main__":
    typer.run(mcp_command)
