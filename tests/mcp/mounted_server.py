"""The API app with MCP at /mcp, served like `fluxedit serve` does (for the tests of mount_mcp itself).

python -m tests.mcp.mounted_server PORT DATA_DIR. The app factory's own mount is used when it has one;
until then mount_mcp is called here, as the app factory will.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from fluxedit.api.app import create_app
from fluxedit.config import Settings
from fluxedit.mcp.http import PATH, mount_mcp


def main(port: int, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(model="tiny", port=port, data_dir=data_dir)
    app = create_app(settings)
    if not any(getattr(route, "path", None) == PATH for route in app.routes):
        mount_mcp(app, settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
