"""Batches on the HTTP service (tiny model, CPU): the API time to create a big batch, and a small batch's
throughput against the same images sent as single predictions, side by side in one run.

One `fluxedit serve --model tiny --workers 1` on a free 127.0.0.1 port in a temporary folder (no keys:
loopback), with the queue and rate limits lifted so that every single create is admitted too.

1. Create time: a batch of `--count` images (1,000 by default) given as file ids (each a distinct uploaded
   64x48 PNG), then one given as URLs of a local web server (not fetched by the create: each prediction's
   preparation fetches its own), each cancelled at once so none runs; and, for scale, `--singles` single
   predictions created one request at a time. Printed: the seconds of each create request and per 100
   images, and the cancel's seconds.
2. Throughput: after one warm-up edit, `--small-count` images (1 step) as one batch, then the same images
   as single predictions created at once; the wall time from the first create to the last end, and images
   per second. On one CPU worker the two should match: a batch is ordinary predictions, it adds no work.

    python -m bench.batch [--count 1000] [--singles 100] [--small-count 6] [--small]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from tests.helpers import encoded, pattern
from tests.service.server import Server

TERMINAL = ("success", "error", "cancelled")
STEP = {"prompt": "make it blue", "num_inference_steps": 1}


def image_server() -> tuple[ThreadingHTTPServer, str]:
    """GET /img/N.png: a distinct small PNG for each N."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = encoded(pattern(64, 48, seed=int(self.path.rsplit("/", 1)[-1].split(".")[0])), "PNG")
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def upload_many(client: httpx.Client, count: int) -> list[str]:
    def one(number: int) -> str:
        data = encoded(pattern(64, 48, seed=10_000 + number), "PNG")
        response = client.post("/v1/files", files={"file": (f"photo-{number}.png", data)})
        response.raise_for_status()
        return response.json()["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def timed_batch(client: httpx.Client, images: list) -> tuple[dict, float]:
    started = time.perf_counter()
    response = client.post("/v1/batches", json={"input": STEP, "images": images})
    took = time.perf_counter() - started
    response.raise_for_status()
    return response.json(), took


def timed_cancel(client: httpx.Client, batch_id: str) -> float:
    started = time.perf_counter()
    client.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()
    return time.perf_counter() - started


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while (batch := client.get(f"/v1/batches/{batch_id}").json())["completed_at"] is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} did not end: {batch['counts']}")
        time.sleep(0.1)
    return batch


def wait_prediction(client: httpx.Client, prediction_id: str) -> dict:
    while (prediction := client.get(f"/v1/prediction/{prediction_id}", params={"wait": 30}).json())[
        "status"
    ] not in TERMINAL:
        pass
    return prediction


def create_times(client: httpx.Client, web: str, count: int, singles: int) -> None:
    ids = upload_many(client, count)
    print(f"create time, {count} images (the API's answer; nothing waits for them to run):")
    for label, images in (("file ids", ids), ("URLs", [f"{web}/img/{n}.png" for n in range(count)])):
        batch, took = timed_batch(client, images)
        cancel = timed_cancel(client, batch["id"])
        assert batch["total"] == count
        per_100 = 100 * took / count
        print(f"  batch of {label:8s}  {took:6.2f} s   {per_100:6.3f} s per 100 images   (cancel {cancel:.2f} s)")
        wait_batch(client, batch["id"])
    started = time.perf_counter()
    created = []
    for number in range(singles):
        body = {"input": {**STEP, "image_url": ids[number % len(ids)]}}
        created.append(client.post("/v1/prediction", json=body).json()["predictionID"])
    took = time.perf_counter() - started
    print(f"  {singles} singles     {took:6.2f} s   {100 * took / singles:6.3f} s per 100 images   (one request each)")
    for prediction_id in created:
        client.post(f"/v1/prediction/{prediction_id}/cancel")


def throughput(client: httpx.Client, count: int) -> None:
    ids = upload_many(client, count)  # the same files for both runs: content-addressed, stored once
    warm_up = client.post("/v1/prediction", json={"input": {**STEP, "image_url": ids[0]}}).json()["predictionID"]
    wait_prediction(client, warm_up)  # the worker's first edit is slower: neither run pays for it
    started = time.perf_counter()
    batch, _ = timed_batch(client, ids)
    ended = wait_batch(client, batch["id"])
    batch_s = time.perf_counter() - started
    assert ended["counts"]["success"] == count, ended["counts"]

    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        bodies = [{"input": {**STEP, "image_url": file_id}} for file_id in ids]
        created = list(pool.map(lambda body: client.post("/v1/prediction", json=body).json()["predictionID"], bodies))
        finished = list(pool.map(lambda prediction_id: wait_prediction(client, prediction_id), created))
    singles_s = time.perf_counter() - started
    assert all(prediction["status"] == "success" for prediction in finished)
    print(f"throughput, {count} images of 64x48 (1 step, tiny model, one worker):")
    print(f"  as one batch          {batch_s:6.1f} s   {count / batch_s:5.2f} images/s")
    print(f"  as single predictions {singles_s:6.1f} s   {count / singles_s:5.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="images in the batch whose create is timed")
    parser.add_argument("--singles", type=int, default=100, help="single creates timed, for scale")
    parser.add_argument("--small-count", type=int, default=6, help="images of the throughput comparison")
    parser.add_argument("--small", action="store_true", help="a quick run for the tests: 100, 10 and 2")
    args = parser.parse_args()
    if args.small:
        args.count, args.singles, args.small_count = 100, 10, 2
    env = {"FLUXEDIT_RATE_LIMIT": "0", "FLUXEDIT_MAX_QUEUE_PER_KEY": "0", "FLUXEDIT_MAX_QUEUE": "100000"}
    web_server, web = image_server()
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder) / "data", "--workers", "1", "--allow-private-urls", env=env).start()
        try:
            with httpx.Client(base_url=server.url, timeout=300) as client:
                create_times(client, web, args.count, args.singles)
                throughput(client, args.small_count)
        finally:
            server.stop()
            web_server.shutdown()


if __name__ == "__main__":
    main()
