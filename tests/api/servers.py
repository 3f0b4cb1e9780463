"""A keyed fluxedit server for the client tests, and a webhook receiver that keeps what it got."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.service.server import FLUXEDIT, Server


def make_key(data_dir: Path, name: str) -> str:
    result = subprocess.run([FLUXEDIT, "keys", "create", name, "--data-dir", str(data_dir)], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def keyed_server(data_dir: Path, *names: str) -> tuple[Server, dict[str, str]]:
    """A started server (private URLs allowed: the test's receivers live on 127.0.0.1) and its keys."""
    keys = {name: make_key(data_dir, name) for name in names}
    return Server(data_dir, "--allow-private-urls").start(), keys


class Receiver:
    """Webhook calls on 127.0.0.1, each as (headers, raw body); any GET is a 404. `port`: one chosen before
    (a receiver that comes up late, after a webhook was aimed at it); 0: any free one."""

    def __init__(self, port: int = 0) -> None:
        received: list[tuple[dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def do_GET(self):  # an image URL that is not there, for failing predictions
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def about(self, marker: bytes) -> list[tuple[dict[str, str], bytes]]:
        return [call for call in self.received if marker in call[1]]

    def calls_about(self, prediction_id: str, count: int, timeout: float = 30) -> list[tuple[dict, bytes]]:
        """The calls whose body names this prediction, once there are `count` of them (and a moment for more)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = [call for call in self.received if f'"id":"{prediction_id}"'.encode() in call[1]]
            if len(calls) >= count:
                time.sleep(0.5)  # a call too many would show up now
                return [call for call in self.received if f'"id":"{prediction_id}"'.encode() in call[1]]
            time.sleep(0.05)
        raise TimeoutError(f"{count} webhook calls about {prediction_id} did not arrive")

    def close(self) -> None:
        self.http.shutdown()
