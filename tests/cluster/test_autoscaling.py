"""The Ray pool's size follows the queue: a second actor that Ray cannot place stays pending (the demand an
autoscaler answers with a GPU node) until a node is added, then takes work; actors without work stop again."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.cluster.test_ray_workers import wait_workers, worker_of
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

pytestmark = pytest.mark.cluster
PENDING = "waiting for Ray to place it on a node with a free GPU"


def ray_server(cluster, data, *flags) -> Server:
    return Server(data, "--workers", "ray", *flags, env={"RAY_ADDRESS": cluster.address})


def test_a_second_actor_stays_pending_until_a_node_is_added_then_takes_work(one_node, tmp_path):
    with ray_server(one_node, tmp_path / "data", "--min-workers", "1", "--max-workers", "2") as server:
        client = server.client()
        big = upload(client, encoded(pattern(1024, 1024), "PNG"))["id"]
        small = upload(client, encoded(pattern(128, 128), "PNG"))["id"]
        long_ones = [create(client, image_url=big, num_inference_steps=50, seed=i) for i in range(2)]
        short = create(client, image_url=small, num_inference_steps=2)

        workers = wait_workers(server, ["busy", "starting"])
        assert [w["state"] for w in workers] == ["busy", "starting"] and workers[1]["reason"] == PENDING, workers
        time.sleep(3)  # no node has a free GPU: it stays pending while work waits
        health = httpx.get(server.url + "/health").json()
        assert health["workers"][1]["state"] == "starting" and health["workers"][1]["reason"] == PENDING, health
        assert health["queue_depth"] >= 1

        one_node.add_worker_node()  # what Ray's autoscaler does for a pending actor
        ids = [*long_ones, short]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(ran_on(client, i) == "worker-1" for i in ids):
            time.sleep(0.5)
        assert any(ran_on(client, i) == "worker-1" for i in ids), [ran_on(client, i) for i in ids]
        for prediction_id in long_ones:
            client.post(f"/v1/prediction/{prediction_id}/cancel")  # their time proves nothing more
        assert wait_done(client, short, timeout=300)["status"] == "success"
        assert all(wait_done(client, i)["status"] in ("success", "cancelled") for i in long_ones)


def ran_on(client, prediction_id: str) -> str | None:
    prediction = client.get(f"/v1/prediction/{prediction_id}").json()
    return worker_of(prediction) if "starting on" in (prediction["logs"] or "") else None


def test_a_pool_of_none_grows_for_work_and_shrinks_when_idle(one_node, tmp_path):
    flags = ("--min-workers", "0", "--max-workers", "1", "--worker-idle-seconds", "2")
    server = ray_server(one_node, tmp_path / "data", *flags).start(wait_ready=False)
    try:
        with server.client() as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # up, with no worker yet
                try:
                    if httpx.get(server.url + "/health").json()["workers"] == []:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            photo = upload(client, encoded(pattern(128, 128), "PNG"))["id"]
            done = wait_done(client, create(client, image_url=photo), timeout=300)
            assert done["status"] == "success" and worker_of(done) == "worker-0"
            assert wait_workers(server, [], timeout=30) == []  # idle for 2 s: stopped again
            deadline = time.monotonic() + 30
            while one_node.actors() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not one_node.actors()  # and its actor is gone from the cluster, its GPU free
        server.stop()  # SIGTERM still stops the server gracefully: ray.init replaces the handler, the pool puts it back
        assert "Application shutdown complete" in server.log()
    finally:
        server.stop()
