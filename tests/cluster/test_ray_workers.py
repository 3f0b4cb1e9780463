"""GPU workers on Ray, through a real server (--workers ray) on a head and two worker nodes that each declare one
GPU: predictions run on both nodes, each exactly once; LoRA affinity; a cancel lands within a step; a node
removed mid-edit re-runs its prediction on the other node."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import lora_builders as build
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


def actor_loads(cluster) -> dict[str, dict[str, int]]:
    return {name: actor["lora_loads"] for name, actor in cluster.wait_for_actors(2).items()}


def test_lora_affinity_each_adapter_is_loaded_once_per_worker_at_most(two_nodes, client, photo, tmp_path):
    """With --max-loras 1 a worker holds one adapter: predictions alternating between two LoRAs would reload one on
    every run if they went to the first free worker; each goes to the worker holding its adapter instead."""
    for name, seed in (("ink", 61), ("neon", 62)):
        path = build.write(build.diffusers_lora(seed=seed), tmp_path / f"{name}.safetensors")
        response = client.post("/v1/loras", files={"file": (path.name, path.read_bytes())}, data={"name": name})
        assert response.status_code == 201, response.text
    before = actor_loads(two_nodes)
    ran_on: dict[str, set[str]] = {"ink": set(), "neon": set()}
    for i in range(6):
        name = ("ink", "neon")[i % 2]
        done = wait_done(client, create(client, image_url=photo, seed=i, loras=[{"path": name, "scale": 1.0}]))
        assert done["status"] == "success", done["output"]
        ran_on[name].add(worker_of(done))
    after = actor_loads(two_nodes)
    loads = {(actor, adapter): count - before.get(actor, {}).get(adapter, 0)
             for actor, counts in after.items() for adapter, count in counts.items()}  # fmt: skip
    assert sum(loads.values()) == 2 and all(count <= 1 for count in loads.values()), loads
    assert len(ran_on["ink"]) == len(ran_on["neon"]) == 1 and ran_on["ink"] != ran_on["neon"], ran_on


def stream_and_cancel_after_two_steps(client) -> list[str]:
    """A 50-step edit streamed with previews and cancelled after its second progress event: the event names
    seen (with "cancel" where the cancel was asked), once the prediction ended cancelled while running."""
    big = upload(client, encoded(pattern(1024, 1024), "PNG"))["id"]
    prediction_id = create(client, image_url=big, num_inference_steps=50)
    names = []
    with client.stream("GET", f"/v1/prediction/{prediction_id}/stream", params={"previews": "true"}) as events:
        for line in events.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
                if names.count("progress") == 2 and "cancel" not in names:
                    client.post(f"/v1/prediction/{prediction_id}/cancel")
                    names.append("cancel")
                if names[-1] == "done":
                    break
    prediction = client.get(f"/v1/prediction/{prediction_id}").json()
    assert prediction["status"] == "cancelled" and "cancelled while running" in prediction["logs"]
    return names


def test_progress_and_previews_stream_back_and_a_cancel_lands_within_a_step(client):
    names = stream_and_cancel_after_two_steps(client)
    assert names.count("preview") >= 2  # previews came back from the actor too
    assert 2 <= names.count("progress") < 50  # the actor stopped the edit before its last step


def remove_the_node_running_an_edit(cluster, server, client) -> None:
    """A 20-step edit on one of two ready actors; once it runs, its actor's node is removed. The edit must be
    re-run on the other node, and the lost actor replaced by one pending until a GPU node is free."""
    wait_workers(server, ["ready", "ready"])
    big = upload(client, encoded(pattern(1024, 1024), "PNG"))["id"]
    prediction_id = create(client, image_url=big, num_inference_steps=20, seed=9)
    with client.stream("GET", f"/v1/prediction/{prediction_id}/stream") as events:
        next(line for line in events.iter_lines() if line.startswith("event: progress"))  # it is running
    victim = worker_of(client.get(f"/v1/prediction/{prediction_id}").json())
    pid = next(w["pid"] for w in httpx.get(server.url + "/health").json()["workers"] if w["name"] == victim)
    node_id = next(actor["node_id"] for actor in cluster.actors(stats=False).values() if actor["pid"] == pid)

    cluster.remove_worker_node(node_id)
    done = wait_done(client, prediction_id, timeout=300)

    assert done["status"] == "success", done["output"]
    assert "re-queued: its worker was lost" in done["logs"]
    assert worker_of(done) != victim  # the other node ran it
    lost = next(w for w in httpx.get(server.url + "/health").json()["workers"] if w["name"] == victim)
    assert lost["restarts"] == 1 and lost["state"] == "starting"  # replaced: pending until a GPU node is free


def test_a_node_removed_mid_edit_reruns_its_prediction_on_the_other_node(two_nodes, server, client):
    remove_the_node_running_an_edit(two_nodes, server, client)
    two_nodes.add_worker_node()
    assert [w["state"] for w in wait_workers(server, ["ready", "ready"])] == ["ready", "ready"]
