"""Load on the HTTP service: many concurrent creates and polls from several keys, on the tiny model (CPU).

One `fluxedit serve --model tiny` runs on a free 127.0.0.1 port in a temporary
folder, with `--keys` API keys made through the CLI beforehand. Each key
uploads one small PNG once (POST /v1/files) and then the keys create
predictions all at once (1 step, 64x64): the first key, the "heavy" one,
sends `--heavy` of them, every other key `--light`, all concurrently. While
they are created and run:

- every create's latency is recorded (p50, p99, max);
- a separate client polls /health every 50 ms (p50, p99, max latency);
- every prediction is then long-polled to its end: each must end `success`
  and every id the server answered must be found again (nothing lost);
- fairness: the queue time (metrics.queue_time) of the light keys against the
  heavy key's. A server that serves keys in turn runs each light key's work
  within a few predictions of its arrival, however much the heavy key queued:
  the ratio of the light keys' median queue time to the heavy key's median
  is printed (well under 1 is fair; about 1 is first-come-first-served), and
  how many of the heavy key's predictions started before the last light one.

Per-key rate and queue limits are raised for the run so that every create is
admitted (the limits themselves are tested in tests/service/).

    python -m bench.load [--keys 4] [--heavy 120] [--light 8] [--budget 600]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server

TERMINAL = ("success", "error", "cancelled")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def make_keys(data_dir: Path, count: int) -> list[str]:
    keys = []
    for index in range(count):
        done = subprocess.run(
            [FLUXEDIT, "keys", "create", f"load-{index}", "--data-dir", str(data_dir)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        keys.append(done.stdout.strip().splitlines()[-1])
    return keys


async def poll_health(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.get("/health")
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            await asyncio.sleep(0.05)


async def create_one(client: httpx.AsyncClient, image_url: str, seed: int, latencies: list[float]) -> str:
    body = {
        "model": "flux-kontext-dev",
        "input": {"prompt": "make it blue", "image_url": image_url, "num_inference_steps": 1, "seed": seed},
    }
    started = time.perf_counter()
    response = await client.post("/v1/prediction", json=body)
    latencies.append(time.perf_counter() - started)
    if response.status_code != 200:
        raise RuntimeError(f"create answered {response.status_code}: {response.text[:300]}")
    return response.json()["predictionID"]


async def wait_end(client: httpx.AsyncClient, prediction_id: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/prediction/{prediction_id}", params={"wait": 30})
        response.raise_for_status()
        prediction = response.json()
        if prediction["status"] in TERMINAL:
            return prediction
    raise TimeoutError(f"prediction {prediction_id} did not end within the budget")


async def run_load(server: Server, keys: list[str], heavy: int, light: int, budget: float) -> dict:
    image = encoded(pattern(64, 64), "PNG")
    clients = [
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) for key in keys
    ]
    try:
        file_urls = []
        for client in clients:
            response = await client.post("/v1/files", files={"file": ("photo.png", image)})
            response.raise_for_status()
            file_urls.append(response.json()["id"])  # an upload id: resolved internally
        stop, health = asyncio.Event(), []
        health_task = asyncio.create_task(poll_health(server.url, stop, health))
        create_latencies: list[float] = []
        counts = [heavy] + [light] * (len(keys) - 1)
        started = time.monotonic()
        jobs = [
            (index, create_one(clients[index], file_urls[index], seed, create_latencies))
            for index, count in enumerate(counts)
            for seed in range(count)
        ]
        ids = await asyncio.gather(*(job for _, job in jobs))
        created_s = time.monotonic() - started
        owners = [index for index, _ in jobs]
        deadline = time.monotonic() + budget
        ended = await asyncio.gather(
            *(wait_end(clients[owner], pid, deadline) for owner, pid in zip(owners, ids, strict=True))
        )
        total_s = time.monotonic() - started
        stop.set()
        await health_task
        listed = set()
        for client in clients:
            cursor = None
            while True:
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = (await client.get("/v1/prediction", params=params)).json()
                listed.update(item["id"] for item in page["data"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
    finally:
        for client in clients:
            await client.aclose()
    return {
        "ids": ids,
        "owners": owners,
        "ended": ended,
        "listed": listed,
        "create": create_latencies,
        "health": health,
        "created_s": created_s,
        "total_s": total_s,
    }


def report(result: dict, keys: int) -> bool:
    ended, owners = result["ended"], result["owners"]
    statuses = [p["status"] for p in ended]
    lost = [pid for pid in result["ids"] if pid not in result["listed"]]
    failed = [p for p in ended if p["status"] != "success"]
    create, health = result["create"], result["health"]
    print(f"{len(ended)} predictions from {keys} keys, created in {result['created_s']:.2f} s, all ended after "
          f"{result['total_s']:.1f} s ({len(ended) / result['total_s']:.1f}/s)")  # fmt: skip
    print(f"create latency: p50 {percentile(create, 0.5) * 1000:.0f} ms, p99 {percentile(create, 0.99) * 1000:.0f} ms, "
          f"max {max(create) * 1000:.0f} ms")  # fmt: skip
    print(f"/health latency meanwhile ({len(health)} polls): p50 {percentile(health, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(health, 0.99) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms")  # fmt: skip
    print(f"statuses: { {s: statuses.count(s) for s in sorted(set(statuses))} }; not found again in the lists: "
          f"{len(lost)}")  # fmt: skip
    queue = {index: [] for index in range(keys)}
    for owner, prediction in zip(owners, ended, strict=True):
        queue[owner].append(prediction["metrics"].get("queue_time", 0.0))
    heavy_median = statistics.median(queue[0])
    light = [t for index in range(1, keys) for t in queue[index]]
    light_median = statistics.median(light) if light else 0.0
    for index in range(keys):
        times = queue[index]
        role = "heavy" if index == 0 else "light"
        print(f"key {index} ({role}, {len(times)}): queue time median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s")  # fmt: skip
    ratio = light_median / heavy_median if heavy_median else float("nan")
    print(f"fairness: light keys' median queue time / heavy key's = {ratio:.2f} (about 1 is first come, first served)")
    return not lost and not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=4, help="API keys (the first one is the heavy one)")
    parser.add_argument("--heavy", type=int, default=120, help="predictions the first key creates")
    parser.add_argument("--light", type=int, default=8, help="predictions every other key creates")
    parser.add_argument("--budget", type=float, default=600, help="seconds for everything to end")
    args = parser.parse_args()
    if args.keys < 2:
        parser.error("--keys: at least 2 (one heavy, one light)")
    with tempfile.TemporaryDirectory(prefix="fluxedit-load-") as folder:
        data_dir = Path(folder) / "data"
        keys = make_keys(data_dir, args.keys)
        limits = {"FLUXEDIT_RATE_LIMIT": "0", "FLUXEDIT_MAX_QUEUE_PER_KEY": "0", "FLUXEDIT_MAX_QUEUE": "100000"}
        with Server(data_dir, env=limits) as server:
            result = asyncio.run(run_load(server, keys, args.heavy, args.light, args.budget))
    return 0 if report(result, args.keys) else 1


if __name__ == "__main__":
    sys.exit(main())
