"""The whole scale-out stack on one machine: two `fluxedit serve` replicas on one PostgreSQL, files in S3 (a local
S3 server), GPU workers on Ray (a head and two worker nodes), all on 127.0.0.1 inside the cluster tests' network
namespace. Each replica has a data folder of its own: what they share is the database, the bucket and the Ray
cluster, as replicas on two machines would.

Predictions made alternately on both run exactly once each on the Ray actors, their outputs are in the bucket and
come back byte for byte from either replica; the official replicate client works against either; and when the
leader is killed with SIGKILL while it holds queued and running work, the other replica takes the lead, its own
Ray actors replace the dead leader's, and it finishes everything.
"""

from __future__ import annotations

import secrets
import signal
import time

import pytest
import replicate

from fluxedit.store.database import migrate
from tests.cluster.test_ray_workers import wait_workers
from tests.helpers import encoded, pattern
from tests.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.s3 import S3Bucket, s3_server  # noqa: F401  (fixture)
from tests.service.server import Server, create, upload, wait_done
from tests.service.test_replicas import ENDED, dispatches, wait_role

pytestmark = pytest.mark.cluster

PREFIX = "stack/images"
SMALL = encoded(pattern(64, 64), "PNG")
MODEL = "black-forest-labs/flux-kontext-dev"
RAY_WORKERS = ("--workers", "ray", "--min-workers", "2", "--max-workers", "2")


@pytest.fixture(scope="module", autouse=True)
def bucket(s3_server):  # noqa: F811
    """A fresh bucket, its AWS variables set here before the Ray cluster starts: the worker nodes inherit them, as
    docs/scale-out.md asks of workers' machines (each actor reads inputs from the bucket itself)."""
    made = S3Bucket(s3_server, "fluxedit-stack-" + secrets.token_hex(4))
    with pytest.MonkeyPatch.context() as env:
        for name, value in made.env.items():
            env.setenv(name, value)
        made.client().create_bucket(Bucket=made.name)
        yield made


def replica(database_url: str, data, cluster, bucket: S3Bucket) -> Server:
    storage = ("--database-url", database_url, "--storage", f"s3://{bucket.name}/{PREFIX}")
    return Server(data, *storage, *RAY_WORKERS, env={**bucket.env, "RAY_ADDRESS": cluster.address}).start()


@pytest.fixture(scope="module")
def stack(two_nodes, postgres_cluster, bucket, tmp_path_factory):  # noqa: F811
    """The leader (started first: it takes the lock and starts two Ray actors) and a follower."""
    url = postgres_cluster.create_database()
    migrate(url)
    folder = tmp_path_factory.mktemp("stack")
    leader = replica(url, folder / "leader", two_nodes, bucket)
    follower = None
    try:
        wait_role(leader, "leader")
        follower = replica(url, folder / "follower", two_nodes, bucket)
        wait_role(follower, "follower")
        workers = wait_workers(leader, ["ready", "ready"])
        assert [w["state"] for w in workers] == ["ready", "ready"], f"{workers}\n{leader.log()}"
        yield leader, follower
    finally:
        for server in (follower, leader):
            if server is not None:
                server.stop(signal.SIGKILL)


def runs_by_actor(cluster) -> dict[str, int]:
    return {name: actor["runs"] for name, actor in cluster.wait_for_actors(2).items()}


def object_key(output_url: str) -> str:
    output_id = output_url.rsplit("/", 1)[1].split(".")[0]
    return f"{PREFIX}/files/{output_id[-2:]}/{output_id}"


def path_of(url: str, *servers: Server) -> str:
    for server in servers:
        url = url.replace(server.url, "")
    return url


def test_forty_predictions_on_both_replicas_each_run_once_on_the_ray_actors_outputs_in_the_bucket(
    two_nodes, stack, bucket
):
    leader, follower = stack
    before = runs_by_actor(two_nodes)
    with leader.client() as on_leader, follower.client() as on_follower:
        sides = [on_leader, on_follower]
        photos = [upload(side, SMALL)["id"] for side in sides]
        made = [create(sides[i % 2], image_url=photos[i % 2], num_inference_steps=1 + i % 2, seed=i) for i in range(40)]
        ended = [wait_done(sides[(i + 1) % 2], prediction_id, timeout=300) for i, prediction_id in enumerate(made)]
        assert [p["status"] for p in ended] == ["success"] * 40, [p["logs"] for p in ended if p["status"] != "success"]
        assert [dispatches(p) for p in ended] == [1] * 40  # each handed to a worker once
        after = runs_by_actor(two_nodes)
        runs = {name: after[name] - before.get(name, 0) for name in after}
        assert sum(runs.values()) == 40 and all(count > 0 for count in runs.values()), runs  # both nodes, once each

        stored = bucket.objects(f"{PREFIX}/")
        for prediction in ended:
            key = object_key(prediction["output"][0])
            in_bucket = bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()
            assert stored[key] == len(in_bucket) and in_bucket[:8] == b"\x89PNG\r\n\x1a\n"
            path = path_of(prediction["output"][0], leader, follower)
            assert [side.get(path).content for side in sides] == [in_bucket, in_bucket]  # from either replica
    for side in (leader, follower):
        assert not [p for p in (side.data_dir / "files").rglob("*") if p.is_file()]  # no bytes on an API's disk


def test_the_replicate_client_runs_a_prediction_on_either_replica(stack, tmp_path):
    leader, follower = stack
    photo = tmp_path / "photo.png"
    photo.write_bytes(SMALL)
    for server in (leader, follower):
        client = replicate.Client(api_token="no-keys-on-loopback", base_url=server.url)  # only these two change
        with photo.open("rb") as image:
            output = client.run(MODEL, input={"prompt": "make it blue", "input_image": image, "num_inference_steps": 1})
        url = str(output)
        assert url.startswith(server.url + "/"), url
        with server.client() as http:
            assert http.get(path_of(url, server)).content[:8] == b"\x89PNG\r\n\x1a\n"
        (latest,) = client.predictions.list().results[:1]
        assert latest.status == "succeeded" and latest.output == url


def wait_status(client, prediction_id: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/prediction/{prediction_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{prediction_id} never became {status}"
        time.sleep(0.05)


def test_a_killed_leaders_queued_and_running_work_is_finished_by_the_other_replica_on_its_own_actors(two_nodes, stack):
    leader, follower = stack
    dead_leaders_actors = set(two_nodes.actors(stats=False))
    assert len(dead_leaders_actors) == 2
    with leader.client() as on_leader, follower.client() as on_follower:
        photo = upload(on_follower, SMALL)["id"]
        running = [create(on_leader, image_url=photo, num_inference_steps=12, seed=100 + i) for i in range(2)]
        for prediction_id in running:  # both actors busy: what follows waits in the queue
            wait_status(on_follower, prediction_id, "processing")
        queued = [create([on_leader, on_follower][i % 2], image_url=photo, seed=200 + i) for i in range(4)]
        assert {on_follower.get(f"/v1/prediction/{q}").json()["status"] for q in queued} == {"created"}

        leader.stop(signal.SIGKILL)  # its connections close (the lock is free), Ray ends its actors and their runs
        wait_role(follower, "leader")
        ended = {p: wait_done(on_follower, p, timeout=300) for p in [*running, *queued]}

        assert {p: e["status"] for p, e in ended.items()} == dict.fromkeys(ended, "success"), follower.log()
        for prediction_id in running:
            assert "re-queued: the server stopped while it ran" in ended[prediction_id]["logs"]
            assert dispatches(ended[prediction_id]) == 2
        assert [dispatches(ended[q]) for q in queued] == [1] * 4
        listed = on_follower.get("/v1/prediction").json()["data"]
        assert not [p["id"] for p in listed if p["status"] not in ENDED]  # nothing left starting or processing
    replacements = two_nodes.wait_for_actors(2)
    assert len(replacements) == 2 and not set(replacements) & dead_leaders_actors, replacements
    assert {actor["node_id"] for actor in replacements.values()} == {node.node_id for node in two_nodes.nodes}
