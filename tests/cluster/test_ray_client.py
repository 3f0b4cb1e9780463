"""GPU workers through Ray Client: a real server started with `--workers ray://127.0.0.1:PORT` (the head's client
port) and no RAY_ADDRESS, the issue's headline command, on a head and two worker nodes that each declare one GPU:
predictions succeed on the actors of both nodes, progress and previews stream back, a cancel lands within a step, and
a node removed mid-edit (its actor's death reaching the server through the client connection) re-runs the edit on
the other node."""

from __future__ import annotations

import asyncio

import pytest

from fluxedit.config import EngineConfig
from fluxedit.worker.messages import WorkerState
from fluxedit.worker.ray_pool import RayWorkerPool
from tests.cluster.test_ray_workers import (
    remove_the_node_running_an_edit,
    stream_and_cancel_after_two_steps,
    wait_workers,
    worker_of,
)
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def server(two_nodes_with_client, tmp_path_factory):
    data = tmp_path_factory.mktemp("ray-client") / "data"
    flags = ("--workers", two_nodes_with_client.client_address, "--min-workers", "2", "--max-workers", "2")
    running = Server(data, *flags)
    running.env.pop("RAY_ADDRESS", None)  # only the ray:// address may lead it to the cluster
    with running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


def test_predictions_run_to_success_on_the_actors_of_both_nodes(two_nodes_with_client, server, client):
    workers = wait_workers(server, ["ready", "ready"])
    assert [w["state"] for w in workers] == ["ready", "ready"], server.log()
    actors = two_nodes_with_client.wait_for_actors(2)
    assert {w["pid"] for w in workers} == {actor["pid"] for actor in actors.values()}  # the cluster's actors
    assert len({actor["node_id"] for actor in actors.values()}) == 2  # one on each GPU node
    runs_before = sum(actor["runs"] for actor in actors.values())

    photo = upload(client, encoded(pattern(128, 128), "PNG"))["id"]
    ids = [create(client, image_url=photo, seed=i, num_inference_steps=4) for i in range(6)]
    done = [wait_done(client, prediction_id) for prediction_id in ids]

    assert all(p["status"] == "success" for p in done), [(p["status"], p["logs"]) for p in done]
    assert all(client.get(p["output"][0]).status_code == 200 for p in done)
    assert {worker_of(p) for p in done} == {"worker-0", "worker-1"}
    after = two_nodes_with_client.wait_for_actors(2)
    assert sum(actor["runs"] for actor in after.values()) - runs_before == 6


def test_progress_and_previews_stream_back_and_a_cancel_lands_within_a_step(server, client):
    wait_workers(server, ["ready", "ready"])
    names = stream_and_cancel_after_two_steps(client)
    assert names.count("preview") >= 2  # previews came back through the client connection too
    assert 2 <= names.count("progress") < 50  # the actor stopped the edit before its last step


def test_a_node_removed_mid_edit_reruns_its_prediction_on_the_other_node(two_nodes_with_client, server, client):
    remove_the_node_running_an_edit(two_nodes_with_client, server, client)


class DisconnectedActorClass:
    """What `ray.remote(EngineActor)` answers once a Ray Client connection is lost for good: every call refuses."""

    def options(self, **_options):
        return self

    def remote(self, *_args):
        raise ConnectionError("Ray client has already been disconnected due to an error.")


def test_a_lost_ray_client_connection_leaves_the_worker_failed_saying_why_and_nothing_raises(tmp_path):
    async def scenario():
        pool = RayWorkerPool(EngineConfig(device="cpu"), reader=None, address="ray://head:10001", max_workers=1)
        pool.loop, pool._remote = asyncio.get_running_loop(), DisconnectedActorClass()
        pool.want_workers(queued=1)  # as the dispatcher asks after a round: must not raise into it
        return pool.workers()

    (worker,) = asyncio.run(scenario())
    assert worker.state == WorkerState.failed
    assert "Ray cannot be reached at ray://head:10001" in worker.reason and "disconnected" in worker.reason
