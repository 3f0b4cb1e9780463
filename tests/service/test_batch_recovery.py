"""Batches across a restart and across the first key: a restarted server fetches a batch's URLs a few at a time,
as when it was made (never all of them at once), and a batch made before keys existed is the first key's."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fluxedit.service.batches import PREPARED_AT_ONCE
from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server, upload
from tests.service.test_batches import wait_batch

STEP = {"prompt": "make it blue", "num_inference_steps": 1}
IMAGES = 8  # twice PREPARED_AT_ONCE: all at once would show as more fetches under way than allowed


class HeldImages:
    """GET /img/N.png answers a small PNG once `release` is set; until then each request waits. It counts, for
    the server (generation) that sent them, the requests under way at once and the most there ever were (a
    stopped server's requests stay held here: they count for its generation only)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.generation = 0
        self.under_way = [0, 0]
        self.most = [0, 0]
        self.arrived = [0, 0]

    @contextmanager
    def serve(self) -> Iterator[str]:
        images = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with images.lock:
                    mine = images.generation
                    images.under_way[mine] += 1
                    images.arrived[mine] += 1
                    images.most[mine] = max(images.most[mine], images.under_way[mine])
                try:
                    images.release.wait(120)
                    number = int(self.path.rsplit("/", 1)[-1].split(".")[0])
                    body = encoded(pattern(64, 48, seed=number), "PNG")
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with images.lock:
                        images.under_way[mine] -= 1

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            self.release.set()
            server.shutdown()
            server.server_close()


def wait_until(condition, timeout: float = 60, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_restarted_server_fetches_a_batchs_urls_a_few_at_a_time_and_finishes_it(tmp_path):
    data = tmp_path / "data"
    images = HeldImages()
    with images.serve() as web:
        with Server(data, "--workers", "1", "--allow-private-urls") as first, first.client() as client:
            urls = [f"{web}/img/{n}.png" for n in range(IMAGES)]
            made = client.post("/v1/batches", json={"input": STEP, "images": urls})
            assert made.status_code == 201, made.text
            batch_id = made.json()["id"]
            wait_until(lambda: images.under_way[0] == PREPARED_AT_ONCE, what="the first fetches")
        # Stopped while every URL still waits: nothing was fetched, so all of them are fetched after the restart.
        images.generation = 1
        with Server(data, "--workers", "1", "--allow-private-urls") as second, second.client() as client:
            wait_until(lambda: images.arrived[1] >= PREPARED_AT_ONCE, what="the restarted server's fetches")
            time.sleep(1.0)  # room for any further fetch a restart would wrongly start at once
            assert images.most[1] == PREPARED_AT_ONCE, f"{images.most[1]} fetches at once after the restart"
            images.release.set()
            ended = wait_batch(client, batch_id, timeout=240)
    assert ended["counts"]["success"] == IMAGES, ended
    assert images.most[1] == PREPARED_AT_ONCE


def test_a_batch_made_before_the_first_key_belongs_to_that_key(tmp_path):
    data = tmp_path / "data"
    with Server(data, "--workers", "1") as server, server.client() as anonymous:
        photo = upload(anonymous, encoded(pattern(64, 48), "PNG"))["id"]
        made = anonymous.post("/v1/batches", json={"input": STEP, "images": [photo]})
        assert made.status_code == 201, made.text
        batch_id = made.json()["id"]
        wait_batch(anonymous, batch_id)
        created = subprocess.run(
            [FLUXEDIT, "keys", "create", "first", "--data-dir", str(data)], capture_output=True, text=True
        )
        assert created.returncode == 0, created.stderr
        assert "1 batch" in created.stderr, created.stderr  # said, so it does not seem lost
        with server.client(created.stdout.strip()) as first:
            seen = first.get(f"/v1/batches/{batch_id}")
            assert seen.status_code == 200, seen.text
            assert seen.json()["counts"]["success"] == 1
            assert [b["id"] for b in first.get("/v1/batches").json()["data"]] == [batch_id]
