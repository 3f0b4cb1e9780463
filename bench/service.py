"""The HTTP service against the bare engine, and 1,000 long-poll waiters, in one run on the tiny model (CPU).

1. Service overhead. The same small edit (a 512x512 PNG uploaded once through
   POST /v1/files, resolution_mode 1:1, 1 step, fixed seed) is timed two ways:
   through the service, from `POST /v1/prediction` to the long-poll
   `GET /v1/prediction/{id}?wait=60` answering "success"; and as a bare
   `Engine.edit` in this process. Runs alternate (the order flips each round)
   after a warm-up, and the bare engine only runs while the server is idle, so
   the two never share the CPU. Prints median and p90 of each, the median
   overhead (target: under 25 ms), and where the server says the time went.

2. 1,000 concurrent long-polls. A slow prediction (50 steps at the default
   size) runs while 1,000 `GET /v1/prediction/{id}?wait=60` wait on it. The
   RSS of the server's main process (not its worker child) is read before and
   while they all wait; then the prediction is cancelled and every waiter must
   come back "cancelled". Prints RSS growth (MB, and KB per waiter) and how long
   the 1,000 took to return after the cancel.

The server (`fluxedit serve --model tiny`) is started on a free 127.0.0.1 port
in a temporary folder and stopped at the end.

    python -m bench.service [--repeats 20] [--waiters 1000] [--slow-steps 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from tests.helpers import encoded, pattern
from tests.service.server import Server

from fluxedit.engine import EditRequest, Engine
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat, validated_settings

PROMPT = "make it a watercolour"
SEED = 1
TERMINAL = ("success", "error", "cancelled")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- /proc readings of the server's main process ------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime, all threads


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd.path).startswith("socket:")
    return count


def cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the worker, multiprocessing's helpers), from every thread's list."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (the server, started after this, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- 1. service overhead ------------------------------------------------------------------------


def service_edit(client: httpx.Client, body: dict) -> tuple[float, float, dict]:
    """POST, then long-poll until the end; (total s, POST s, the final prediction)."""
    started = time.perf_counter()
    response = client.post("/v1/prediction", json=body)
    response.raise_for_status()
    posted = time.perf_counter()
    prediction_id = response.json()["predictionID"]
    deadline = started + 120
    while True:
        prediction = client.get(f"/v1/prediction/{prediction_id}", params={"wait": 60}).json()
        if prediction["status"] in TERMINAL or time.perf_counter() > deadline:
            break
    ended = time.perf_counter()
    if prediction["status"] != "success":
        raise RuntimeError(f"prediction {prediction_id} ended {prediction['status']}: {prediction.get('output')}")
    return ended - started, posted - started, prediction


def measure_overhead(client: httpx.Client, file_id: str, repeats: int, size: int) -> None:
    engine = Engine.load(model="tiny")
    image = pattern(size, size)
    request = EditRequest(
        validated_settings(prompt=PROMPT, num_inference_steps=1, seed=SEED, resolution_mode="1:1"),
        [DecodedImage(image, OutputFormat.png)],
    )
    body = {
        "model": "flux-kontext-dev",
        "input": {
            "prompt": PROMPT,
            "image_url": file_id,
            "resolution_mode": "1:1",
            "num_inference_steps": 1,
            "seed": SEED,
        },
    }

    def bare() -> float:
        started = time.perf_counter()
        engine.edit(request)
        return time.perf_counter() - started

    for _ in range(2):  # warm-up: allocator, caches, the worker's first job, the server's code paths
        service_edit(client, body), bare()

    times: dict[str, list[float]] = {"service": [], "bare": []}
    posts: list[float] = []
    server_side: dict[str, list[float]] = {"queue_time": [], "predict_time": [], "generate_time": [], "encode_time": []}
    last = None
    for round_ in range(repeats):
        for name in ("service", "bare") if round_ % 2 == 0 else ("bare", "service"):
            if name == "bare":
                times["bare"].append(bare())
                continue
            total, post, last = service_edit(client, body)
            times["service"].append(total)
            posts.append(post)
            for key, values in server_side.items():
                values.append(last["metrics"].get(key) or 0.0)

    same = client.get(last["output"][0]).content == engine.edit(request).images[0]
    service_median, bare_median = (statistics.median(times[k]) for k in ("service", "bare"))
    print(f"1. service overhead: {size}x{size} PNG input, 1024x1024 output, 1 step, {repeats} runs each")
    print(f"{'':10}{'median s':>10}{'p90 s':>10}{'min s':>10}")
    for name in ("service", "bare"):
        print(f"{name:10}{statistics.median(times[name]):10.3f}{p90(times[name]):10.3f}{min(times[name]):10.3f}")
    overhead_ms = (service_median - bare_median) * 1000
    verdict = "ok" if overhead_ms < 25 else "OVER"
    print(
        f"median overhead: {overhead_ms:.1f} ms (target < 25 ms: {verdict}); ratio {service_median / bare_median:.3f}"
    )
    medians = {key: statistics.median(values) * 1000 for key, values in server_side.items()}
    worker = medians["generate_time"] + medians["encode_time"]
    print(
        f"server's view (median ms): POST {statistics.median(posts) * 1000:.1f}, queue {medians['queue_time']:.1f}, "
        f"predict {medians['predict_time']:.1f} of which engine generate+encode {worker:.1f} "
        f"(rest in worker/pipe/store: {medians['predict_time'] - worker:.1f})"
    )
    print(f"service output identical to the bare engine's bytes: {'yes' if same else 'NO'}")


# ---- 2. 1,000 long-poll waiters -----------------------------------------------------------------


async def many_waiters(server: Server, file_id: str, waiters: int, slow_steps: int) -> None:
    pid = server.process.pid
    limits = httpx.Limits(max_connections=waiters + 16, max_keepalive_connections=waiters + 16)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=httpx.Timeout(90, pool=90)) as client:
        body = {"model": "flux-kontext-dev", "input": {"prompt": PROMPT, "image_url": file_id, "seed": SEED}}
        body["input"]["num_inference_steps"] = slow_steps
        response = await client.post("/v1/prediction", json=body)
        response.raise_for_status()
        prediction_id = response.json()["predictionID"]
        url = f"/v1/prediction/{prediction_id}"
        deadline = time.monotonic() + 30
        while (status := (await client.get(url)).json()["status"]) != "processing":
            if status in TERMINAL or time.monotonic() > deadline:
                raise RuntimeError(f"the slow prediction is {status}, not processing")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the first step's progress messages settle
        sockets_before, rss_before = open_sockets(pid), rss_kb(pid)

        returned: list[tuple[float, str]] = []

        async def wait_one() -> None:
            answer = await client.get(url, params={"wait": 60})
            returned.append((time.perf_counter(), answer.json()["status"] if answer.status_code == 200 else "http"))

        opened_at = time.perf_counter()
        tasks = [asyncio.create_task(wait_one()) for _ in range(waiters)]
        deadline = time.monotonic() + 30
        while open_sockets(pid) < sockets_before + waiters and time.monotonic() < deadline and not returned:
            await asyncio.sleep(0.05)
            print(
                "DEBUG",
                round(time.perf_counter() - opened_at, 2),
                open_sockets(pid) - sockets_before,
                len(returned),
                cpu_seconds(pid),
            )
        accepted_s = time.perf_counter() - opened_at
        # Accepted is not yet read and parked: wait until the server's CPU use calms down.
        cpu = cpu_seconds(pid)
        while time.monotonic() < deadline and not returned:
            await asyncio.sleep(0.3)
            now = cpu_seconds(pid)
            if now - cpu < 0.03:
                break
            cpu = now
        parked_s = time.perf_counter() - opened_at
        sockets_during = open_sockets(pid)
        rss_during = max(rss_kb(pid) for _ in range(3))
        still = (await client.get(url)).json()["status"]
        if returned or still != "processing":
            raise RuntimeError(f"waiters returned early ({len(returned)}) or the prediction is {still}")

        cpu_at_cancel = cpu_seconds(pid)
        cancel_at = time.perf_counter()
        cancel = await client.post(f"{url}/cancel")
        cancel_s = time.perf_counter() - cancel_at
        done, pending = await asyncio.wait(tasks, timeout=60)
        for task in pending:
            task.cancel()
        fanout_cpu = cpu_seconds(pid) - cpu_at_cancel
        ended = (await client.get(url)).json()

    statuses: dict[str, int] = {}
    for _, status in returned:
        statuses[status] = statuses.get(status, 0) + 1
    failed = sum(1 for task in done if task.exception() is not None)
    first, last = (
        (min(t for t, _ in returned) - cancel_at, max(t for t, _ in returned) - cancel_at) if returned else (0, 0)
    )
    growth_kb = rss_during - rss_before
    print()
    print(f"2. {waiters} concurrent long-polls on a {slow_steps}-step prediction, then cancel")
    print(f"{'server main process':28}{'before':>10}{'waiting':>10}{'growth':>10}")
    print(f"{'RSS MB':28}{rss_before / 1024:10.1f}{rss_during / 1024:10.1f}{growth_kb / 1024:10.1f}")
    print(f"{'open sockets':28}{sockets_before:10d}{sockets_during:10d}{sockets_during - sockets_before:10d}")
    print(f"RSS per waiter: {growth_kb / waiters:.1f} KB")
    print(f"all connections accepted {accepted_s:.2f} s after opening; server CPU calm after {parked_s:.2f} s")
    print(
        f"cancel: POST answered in {cancel_s * 1000:.0f} ms ({cancel.json()['status']}); waiters returned "
        f"{first:.3f} s (first) to {last:.3f} s (last) after it; server CPU for the fan-out {fanout_cpu:.2f} s"
    )
    ok = statuses.get("cancelled", 0) == waiters and not pending and not failed
    print(
        f"waiters back: {len(returned)}/{waiters}, statuses {statuses}, failed {failed}, still waiting {len(pending)}"
        f" -> {'ok' if ok else 'NOT ALL CANCELLED'}; prediction now {ended['status']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="side of the square input image")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--slow-steps", type=int, default=50)
    args = parser.parse_args()

    file_limit = raise_file_limit()
    if file_limit < args.waiters + 256:
        raise SystemExit(f"RLIMIT_NOFILE is {file_limit}: too low for {args.waiters} connections")
    with tempfile.TemporaryDirectory(prefix="fluxedit-bench-") as folder:
        server = Server(Path(folder) / "data", "--allow-private-urls")
        workers: dict[int, bytes] = {}
        try:
            server.start()
            workers = {pid: cmdline(pid) for pid in children(server.process.pid)}
            print(f"server pid {server.process.pid} (children {list(workers)}) on {server.url}, {os.cpu_count()} CPUs")
            with server.client() as client:
                upload = client.post(
                    "/v1/files", files={"file": ("input.png", encoded(pattern(args.size, args.size), "PNG"))}
                )
                upload.raise_for_status()
                file_id = upload.json()["id"]
                if args.repeats:
                    measure_overhead(client, file_id, args.repeats, args.size)
            asyncio.run(many_waiters(server, file_id, args.waiters, args.slow_steps))
        finally:
            server.stop(timeout=30)
            for pid, seen in workers.items():  # only the children of the server we started, if still there
                if seen and cmdline(pid) == seen:
                    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
