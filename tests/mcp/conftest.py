"""One keyed fluxedit server (tiny model) for the MCP tests, and how `fluxedit mcp` is started.

The tests go through `fluxedit serve` and `fluxedit mcp` once they have /mcp and the command; until the
app factory and the CLI are wired, the HTTP tests use the same app with mount_mcp called by
tests/mcp/mounted_server.py and the stdio tests `python -m fluxedit.mcp`, and the two wiring tests fail,
saying what is missing.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.api.servers import make_key
from tests.mcp.helpers import MountedServer, mcp_is_mounted
from tests.service.server import FLUXEDIT, Server


@dataclass
class Keyed:
    server: Server
    key: str
    serve_mounts_mcp: bool  # False: the server is tests/mcp/mounted_server.py, not `fluxedit serve`


@pytest.fixture(scope="package")
def keyed(tmp_path_factory) -> Keyed:
    data_dir = tmp_path_factory.mktemp("mcp") / "data"
    data_dir.mkdir(parents=True)
    key = make_key(data_dir, "mcp-tests")
    server = Server(data_dir).start()
    mounted = mcp_is_mounted(server)
    if not mounted:
        server.stop()
        server = MountedServer(data_dir).start()
    yield Keyed(server, key, mounted)
    server.stop()


@pytest.fixture(scope="package")
def mcp_command() -> tuple[list[str], bool]:
    """The stdio server's command line, and whether it is `fluxedit mcp` itself."""
    wired = subprocess.run([FLUXEDIT, "mcp", "--help"], capture_output=True).returncode == 0
    return ([FLUXEDIT, "mcp"] if wired else [sys.executable, "-m", "fluxedit.mcp"]), wired
