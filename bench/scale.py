"""Scale-out: the tiny model's throughput on one and on two Ray worker nodes, side by side in one run (ratio).

A throwaway Ray cluster on this machine (ray.cluster_utils.Cluster: a head without GPUs and two worker nodes,
each declaring one GPU and `--cpus-per-node` CPUs; the tiny model runs on the CPU, one thread per actor as
Ray sets it), and one `fluxedit serve --model tiny --workers ray` on a free 127.0.0.1 port for each size,
with exactly that many actors (--min-workers = --max-workers). After one warm-up edit per actor, `--count`
predictions are created at once; the wall time from the first create to the last end gives images per
second. Two nodes on one machine share its cores: the ratio shows what the pool adds (work on both nodes at
once), not what two machines would (there, each node brings its own GPU).

The service's overhead per prediction on PostgreSQL against SQLite, side by side in the same run: one
`fluxedit serve --model tiny --workers 1` on a data folder's SQLite and one on a throwaway PostgreSQL cluster
(tests/postgres.py's: Debian's initdb and pg_ctl in a temporary folder on a free loopback port), both up at
once. After a warm-up, `--overhead-count` rounds each time one 1-step edit of a small image on each server in
turn (the order flips every round), from the create to the long-poll answering success; the overhead is
(wall time - the engine time the worker reported) / predictions: what the service and its database add.

    python -m bench.scale [--count 16] [--size 256] [--steps 4] [--cpus-per-node 1] [--small]
                          [--overhead-count 10] [--part all|workers|database]

Run it where Ray may bind this machine's address (or inside a loopback-only network namespace, as
tests/cluster/run_in_netns.sh makes one). The database part needs PostgreSQL's server binaries (`make test`
installs Debian's postgresql as root) and psycopg.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import tempfile
import time
from pathlib import Path

import httpx
from tests.helpers import encoded, pattern
from tests.postgres import PostgresCluster, _free_port, _unprivileged_user, server_bindir
from tests.service.server import Server

TERMINAL = ("success", "error", "cancelled")


def start_cluster(nodes: int, cpus_per_node: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, num_gpus=1, object_store_memory=80 * 1024**2, wait=False)
    cluster.wait_for_nodes()
    return cluster


def wait_all(client: httpx.Client, ids: list[str], timeout: float = 1800) -> list[dict]:
    deadline, done = time.monotonic() + timeout, {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        for prediction_id in [i for i in ids if i not in done]:
            prediction = client.get(f"/v1/prediction/{prediction_id}", params={"wait": 5}).json()
            if prediction["status"] in TERMINAL:
                done[prediction_id] = prediction
    if len(done) < len(ids):
        raise TimeoutError(f"{len(ids) - len(done)} predictions did not end")
    return [done[i] for i in ids]


def wait_ready_workers(server: Server, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = httpx.get(server.url + "/health", timeout=10).json()["workers"]
        if sum(worker["state"] == "ready" for worker in workers) == count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} workers were not ready:\n{server.log()}")


def throughput(address: str, workers: int, args, folder: Path) -> float:
    """Seconds for args.count predictions on `workers` actors, after a warm-up edit on each."""
    flags = ("--workers", "ray", "--min-workers", str(workers), "--max-workers", str(workers))
    with Server(folder / f"data-{workers}", *flags, env={"RAY_ADDRESS": address}) as server:
        wait_ready_workers(server, workers)
        with server.client() as client:
            photo = client.post("/v1/files", files={"file": ("p.png", encoded(pattern(args.size, args.size), "PNG"))})
            fields = {"prompt": "make it blue", "image_url": photo.json()["id"], "num_inference_steps": args.steps}

            def create(seed: int) -> str:
                body = {"model": "flux-kontext-dev", "input": {**fields, "seed": seed}}
                return client.post("/v1/prediction", json=body).json()["predictionID"]

            wait_all(client, [create(10_000 + i) for i in range(workers)])  # each actor's first edit
            started = time.perf_counter()
            ended = wait_all(client, [create(i) for i in range(args.count)])
            took = time.perf_counter() - started
    failed = [p["output"] for p in ended if p["status"] != "success"]
    if failed:
        raise RuntimeError(f"{len(failed)} predictions failed: {failed[:2]}")
    return took


@contextlib.contextmanager
def postgres_database():
    """A throwaway PostgreSQL cluster (as the tests make one) with one migrated database: its URL."""
    from fluxedit.store.database import migrate

    bindir = server_bindir()
    if bindir is None:
        raise SystemExit(
            "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql, or --part workers"
        )
    run_as = _unprivileged_user() if os.geteuid() == 0 else None  # initdb refuses root
    with tempfile.TemporaryDirectory(prefix="fluxedit-pg-") as folder:
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(folder, user.pw_uid, user.pw_gid)
        cluster = PostgresCluster(bindir, Path(folder), _free_port(), run_as)
        cluster.start()
        try:
            url = cluster.create_database()
            migrate(url)
            yield url
        finally:
            cluster.stop()


def timed_edit(client: httpx.Client, fields: dict, seed: int) -> tuple[float, float]:
    """One prediction from its create to the long-poll answering its end: (wall seconds, engine seconds)."""
    started = time.perf_counter()
    body = {"model": "flux-kontext-dev", "input": {**fields, "seed": seed}}
    prediction_id = client.post("/v1/prediction", json=body).json()["predictionID"]
    prediction = {"status": "created"}
    while prediction["status"] not in TERMINAL:
        prediction = client.get(f"/v1/prediction/{prediction_id}", params={"wait": 60}).json()
    wall = time.perf_counter() - started
    if prediction["status"] != "success":
        raise RuntimeError(f"a timed prediction ended {prediction['status']}: {prediction['logs'][-500:]}")
    metrics = prediction["metrics"]
    return wall, (metrics.get("generate_time") or 0.0) + (metrics.get("encode_time") or 0.0)


def database_overhead(args, folder: Path) -> dict[str, float]:
    """Seconds per prediction the service adds (wall minus engine time), on SQLite and on PostgreSQL."""
    photo = encoded(pattern(64, 64), "PNG")
    with postgres_database() as url, contextlib.ExitStack() as stack:
        servers = {
            "SQLite": Server(folder / "data-sqlite", "--workers", "1"),
            "PostgreSQL": Server(folder / "data-postgres", "--workers", "1", "--database-url", url),
        }
        clients, fields = {}, {}
        for name, server in servers.items():
            stack.enter_context(server)
            clients[name] = stack.enter_context(server.client())
            file_id = clients[name].post("/v1/files", files={"file": ("p.png", photo)}).json()["id"]
            fields[name] = {"prompt": "make it blue", "image_url": file_id, "num_inference_steps": 1}
            timed_edit(clients[name], fields[name], seed=10_000)  # warm-up: the first edit and connections
        wall, engine = dict.fromkeys(servers, 0.0), dict.fromkeys(servers, 0.0)
        for round_ in range(args.overhead_count):
            for name in list(servers) if round_ % 2 == 0 else list(servers)[::-1]:
                took, ran = timed_edit(clients[name], fields[name], seed=round_)
                wall[name] += took
                engine[name] += ran
    return {name: (wall[name] - engine[name]) / args.overhead_count for name in servers}


def print_throughput(seconds: dict[int, float], args) -> None:
    print(f"throughput, {args.count} edits of {args.size}x{args.size} ({args.steps} steps, tiny model on the CPU,")
    print(f"one actor per Ray worker node of {args.cpus_per_node} CPU; the nodes share this machine's cores):")
    for nodes, took in seconds.items():
        print(f"  {nodes} worker node{'s' if nodes > 1 else ' '}  {took:6.1f} s   {args.count / took:5.2f} images/s")
    print(f"  ratio two/one          {seconds[1] / seconds[2]:5.2f}x")


def print_overhead(overhead: dict[str, float], args) -> None:
    print(f"service overhead per prediction, {args.overhead_count} sequential 1-step edits on each database")
    print("(a local worker; wall time from create to the long-poll's answer, minus the worker's engine time):")
    for name, seconds in overhead.items():
        print(f"  {name:<11} {seconds * 1000:7.1f} ms")
    print(f"  ratio PostgreSQL/SQLite {overhead['PostgreSQL'] / overhead['SQLite']:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=16, help="predictions per size")
    parser.add_argument("--size", type=int, default=256, help="input image side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="a quick run: 4 predictions of 128x128, 2 steps")
    parser.add_argument("--overhead-count", type=int, default=10, help="timed predictions per database")
    parts = "workers: one against two Ray nodes only; database: PostgreSQL against SQLite only"
    parser.add_argument("--part", choices=("all", "workers", "database"), default="all", help=parts)
    args = parser.parse_args()
    if args.small:
        args.count, args.size, args.steps = 4, 128, 2
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    seconds, overhead = {}, {}
    with tempfile.TemporaryDirectory(prefix="fluxedit-scale-") as folder:
        if args.part in ("all", "workers"):
            cluster = start_cluster(2, args.cpus_per_node)
            try:
                seconds = {n: throughput(cluster.address, n, args, Path(folder)) for n in (1, 2)}
            finally:
                cluster.shutdown()
        if args.part in ("all", "database"):
            overhead = database_overhead(args, Path(folder))
    if seconds:
        print_throughput(seconds, args)
    if overhead:
        print_overhead(overhead, args)


if __name__ == "__main__":
    main()
