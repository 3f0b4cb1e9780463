"""Two `fluxedit serve` replicas on one PostgreSQL, as behind a load balancer: real servers on 127.0.0.1.

Both share the database and a data folder (the file store both serve outputs from); the first started leads (it
holds the advisory lock, runs the worker and dispatches), the second follows. Work taken in on either runs once,
waiting on either sees it end, a cancel on the follower stops a run on the leader, and when the leader is killed
with SIGKILL the follower takes the lead and finishes everything it had queued and running.
"""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from fluxedit.store.database import migrate
from tests.helpers import encoded, pattern
from tests.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.service.server import Server, create, upload, wait_done

SMALL = encoded(pattern(96, 64), "PNG")
ENDED = ("success", "error", "cancelled")


def replicas(url: str, data) -> tuple[Server, Server]:
    """The leader (started first, so it takes the lock) and a follower, on one database and one data folder."""
    args = ("--database-url", url, "--workers", "1")
    leader = Server(data, *args).start()
    assert httpx.get(leader.url + "/health").json()["role"] == "leader"
    follower = Server(data, *args).start()
    assert httpx.get(follower.url + "/health").json()["role"] == "follower"
    return leader, follower


def runs_counted(server: Server) -> int:
    """Runs that a replica's workers finished (each Done a worker reports is one observation)."""
    metrics = httpx.get(server.url + "/metrics").text
    return int(float(re.search(r"^fluxedit_predict_seconds_count (\S+)$", metrics, re.M).group(1)))


def dispatches(prediction: dict) -> int:
    return prediction["logs"].count("starting on ")


def wait_role(server: Server, role: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(server.url + "/health", timeout=5).json()["role"] != role:
        assert time.monotonic() < deadline, f"{server.url} did not become {role}:\n{server.log()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pair(postgres_cluster, tmp_path_factory):  # noqa: F811
    url = postgres_cluster.create_database()
    migrate(url)
    leader, follower = replicas(url, tmp_path_factory.mktemp("replicas") / "data")
    yield leader, follower
    follower.stop()
    leader.stop()


def test_predictions_made_on_both_replicas_each_run_once_and_are_seen_from_either(pair):
    leader, follower = pair
    with leader.client() as on_leader, follower.client() as on_follower:
        sides = [on_leader, on_follower]
        photos = [upload(side, SMALL)["id"] for side in sides]
        made = [create(sides[i % 2], image_url=photos[i % 2], num_inference_steps=1, seed=i) for i in range(6)]
        on_follower_id = made[1]  # a long-poll on the follower: woken by the leader's change, through NOTIFY
        waited = on_follower.get(f"/v1/prediction/{on_follower_id}", params={"wait": 90}).json()
        assert waited["status"] == "success", waited
        ended = [wait_done(sides[(i + 1) % 2], prediction_id) for i, prediction_id in enumerate(made)]
        assert [p["status"] for p in ended] == ["success"] * 6
        assert [dispatches(p) for p in ended] == [1] * 6  # handed to a worker once each
        assert runs_counted(leader) + runs_counted(follower) == 6  # the worker ran each exactly once
        assert runs_counted(follower) == 0  # a follower runs no worker
        for prediction in ended:
            for side in sides:
                output = side.get(prediction["output"][0].replace(leader.url, "").replace(follower.url, ""))
                assert output.status_code == 200 and output.content[:4] == b"\x89PNG"


def test_a_cancel_on_the_follower_stops_a_run_on_the_leader_and_its_stream_shows_the_progress(pair):
    leader, follower = pair
    with follower.client() as on_follower:
        photo = upload(on_follower, SMALL)["id"]
        prediction_id = create(on_follower, image_url=photo, num_inference_steps=50)
        steps = []
        with on_follower.stream("GET", f"/v1/prediction/{prediction_id}/stream") as events:
            for line in events.iter_lines():
                if line.startswith("data:") and '"step"' in line:
                    steps.append(line)
                    if len(steps) == 2:  # running on the leader's worker, seen here: cancel it here
                        assert on_follower.post(f"/v1/prediction/{prediction_id}/cancel").status_code == 200
                if line.startswith("event: done"):
                    break
        prediction = on_follower.get(f"/v1/prediction/{prediction_id}").json()
        assert prediction["status"] == "cancelled" and "cancelled while running" in prediction["logs"]
        assert 2 <= len(steps) < 50 and prediction["output"] is None
    assert httpx.get(f"{leader.url}/v1/prediction/{prediction_id}").json()["status"] == "cancelled"


def test_the_follower_takes_over_from_a_killed_leader_and_finishes_its_queued_and_running_work(
    postgres_cluster,  # noqa: F811
    tmp_path,
):
    url = postgres_cluster.create_database()
    migrate(url)
    leader, follower = replicas(url, tmp_path / "data")
    try:
        with leader.client() as on_leader, follower.client() as on_follower:
            photo = upload(on_leader, SMALL)["id"]
            running = create(on_leader, image_url=photo, num_inference_steps=8)
            queued = [create([on_leader, on_follower][i % 2], image_url=photo, num_inference_steps=1) for i in range(3)]
            deadline = time.monotonic() + 60
            while on_follower.get(f"/v1/prediction/{running}").json()["status"] != "processing":
                assert time.monotonic() < deadline, "the first prediction never started"
                time.sleep(0.05)
            assert {on_follower.get(f"/v1/prediction/{q}").json()["status"] for q in queued} == {"created"}
            leader.stop(signal.SIGKILL)  # its connections close: the lock is free, its worker's run is lost
            wait_role(follower, "leader")
            ended = {p: wait_done(on_follower, p, timeout=180) for p in [running, *queued]}
            assert {p: e["status"] for p, e in ended.items()} == dict.fromkeys(ended, "success")
            assert "re-queued: the server stopped while it ran" in ended[running]["logs"]
            assert dispatches(ended[running]) == 2 and [dispatches(ended[q]) for q in queued] == [1] * 3
            listed = on_follower.get("/v1/prediction").json()["data"]
            assert not [p["id"] for p in listed if p["status"] not in ENDED]  # nothing left starting or processing
    finally:
        follower.stop()
        leader.stop(signal.SIGKILL)
