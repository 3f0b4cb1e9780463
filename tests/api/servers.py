"""A keyed fluxedit server for the client tests, and a webhook receiver that keeps what it got."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.service.server import FLUXEDIT, Server

REPLICATE_ENDED = ("succeeded", "failed", "canceled")


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

    def calls_about(
        self, server: httpx.Client, prediction_id: str, count: int, timeout: float = 60
    ) -> list[tuple[dict, bytes]]:
        """The calls whose body names this prediction, checked to be exactly `count` and no call more.

        By event, not by waiting a while: a delivery is stored in the transaction of the change that causes it,
        so once the prediction has ended (`server`: a client with its owner's key) its delivery log is
        complete; once every delivery there has arrived, the receiver has seen every call it will ever get."""
        deadline = time.monotonic() + timeout
        while (status := server.get(f"/v1/predictions/{prediction_id}").json()["status"]) not in REPLICATE_ENDED:
            assert time.monotonic() < deadline, f"{prediction_id} did not end (still {status})"
            time.sleep(0.05)
        while True:
            response = server.get(f"/v1/prediction/{prediction_id}/webhooks")
            assert response.status_code == 200, response.text
            deliveries = response.json()["deliveries"]
            if all(delivery["state"] == "delivered" for delivery in deliveries):
                break
            assert time.monotonic() < deadline, f"webhooks about {prediction_id} not delivered: {deliveries}"
            time.sleep(0.05)
        calls = [call for call in self.received if f'"id":"{prediction_id}"'.encode() in call[1]]
        assert len(calls) == len(deliveries) == count, (count, deliveries, calls)
        assert all(delivery["attempts"] == 1 for delivery in deliveries)  # this receiver answers 200: no retry
        return calls

    def close(self) -> None:
        self.http.shutdown()
