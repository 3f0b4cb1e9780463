"""GPU workers on Ray, through a real server (--workers ray) on a head and two worker nodes that each declare one
GPU: predictions run on both nodes, each exactly once; LoRA affinity; a cancel lands within a step; a node
removed mid-edit re-runs its prediction on the other node."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def server(two_nodes, tmp_path_factory):
    data = tmp_path_factory.mktemp("ray") / "data"
    flags = ("--workers", "ray", "--min-workers", "2", "--max-workers", "2", "--max-loras", "1")
    with Server(data, *flags, env={"RAY_ADDRESS": two_nodes.address}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def photo(client):
    return upload(client, encoded(pattern(128, 128), "PNG"))["id"]


def wait_workers(server, states: list[str], timeout: float = 180) -> list[dict]:
    """/health's workers once their states are `states` (in order)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = httpx.get(server.url + "/health", timeout=10).json()["workers"]
        if [w["state"] for w in workers] == states or time.monotonic() > deadline:
            return workers
        time.sleep(0.2)


def worker_of(prediction: dict) -> str:
    """The worker a prediction last started on, from its log ("starting on worker-1")."""
    return [line for line in prediction["logs"].splitlines() if "starting on" in line][-1].split("starting on ")[1]


def by_node(cluster) -> dict[str, dict]:
    return {actor["node_id"]: actor for actor in cluster.wait_for_actors(2).values()}


def test_predictions_run_on_both_nodes_each_exactly_once(two_nodes, server, client, photo):
    workers = wait_workers(server, ["ready", "ready"])
    assert [w["state"] for w in workers] == ["ready", "ready"], workers
    before = {node: actor["runs"] for node, actor in by_node(two_nodes).items()}
    assert len(before) == 2  # one actor on each GPU node

    ids = [create(client, image_url=photo, seed=i, num_inference_steps=4) for i in range(8)]
    done = [wait_done(client, prediction_id) for prediction_id in ids]

    assert all(p["status"] == "success" for p in done), [p["output"] for p in done]
    assert {worker_of(p) for p in done} == {"worker-0", "worker-1"}
    after = by_node(two_nodes)
    runs = {node: after[node]["runs"] - before[node] for node in before}
    assert sum(runs.values()) == 8 and all(count > 0 for count in runs.values()), runs
