"""The service on PostgreSQL, through a real `fluxedit serve --database-url` on a throwaway cluster.

What SQLite runs everywhere else runs here on PostgreSQL: create and poll, a long-poll, cancel of a queued and of a
running prediction, a webhook stored in the outbox and delivered, keys with their isolation, spending limits and
usage. `fluxedit serve` refuses the new database until `fluxedit migrate` has upgraded it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from fluxedit.service.keys import KeyRing
from fluxedit.store.database import open_database
from tests.helpers import encoded, pattern
from tests.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.service.server import FLUXEDIT, Server, create, upload, wait_done

PHOTO = encoded(pattern(96, 64), "PNG")
LARGE = encoded(pattern(640, 480), "PNG")  # 50 steps of it run long enough to be cancelled mid-run


def fluxedit(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLUXEDIT_DATABASE_URL": url}
    return subprocess.run([FLUXEDIT, *args], capture_output=True, text=True, timeout=120, env=env)


def make_keys(url: str) -> dict[str, str]:
    ring = KeyRing(open_database(url))  # what `fluxedit keys create` does, without three more processes
    keys = {name: ring.create(name).key for name in ("alice", "bob")}
    return keys | {"capped": ring.create("capped", spending_limit=0.05).key}


class Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    http = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_address[1]}/hook"
    http.shutdown()


@pytest.fixture(scope="module")
def served(postgres_cluster, tmp_path_factory):  # noqa: F811
    url = postgres_cluster.create_database()
    data = tmp_path_factory.mktemp("pg") / "data"
    refused = fluxedit("serve", "--model", "tiny", "--data-dir", str(data), url=url)
    assert refused.returncode == 2 and "fluxedit migrate --database-url" in refused.stderr  # a new, empty database
    migrated = fluxedit("migrate", url=url)
    assert migrated.returncode == 0 and "upgraded from migration none" in migrated.stderr, migrated.stderr
    keys = make_keys(url)
    with Server(data, "--database-url", url, "--workers", "1", "--allow-private-urls") as server:
        yield server, keys


def test_create_poll_and_long_poll(served):
    server, keys = served
    with server.client(keys["alice"]) as alice:
        photo = upload(alice, PHOTO)["id"]
        prediction_id = create(alice, image_url=photo, num_inference_steps=1)
        waited = alice.get(f"/v1/prediction/{prediction_id}", params={"wait": 60}).json()
        assert waited["status"] == "success", waited
        output = alice.get(waited["output"][0])
        assert output.status_code == 200 and output.content[:4] == b"\x89PNG"
        listed = alice.get("/v1/prediction").json()["data"]
        assert prediction_id in {p["id"] for p in listed}


def test_keys_see_only_their_own(served):
    server, keys = served
    with server.client(keys["alice"]) as alice, server.client(keys["bob"]) as bob:
        photo = upload(alice, PHOTO)["id"]
        prediction_id = create(alice, image_url=photo, num_inference_steps=1)
        assert wait_done(alice, prediction_id)["status"] == "success"
        assert bob.get(f"/v1/prediction/{prediction_id}").status_code == 404
        assert bob.get(f"/v1/files/{photo}").status_code == 404
    assert httpx.get(server.url + "/v1/prediction", headers={"Authorization": "Bearer fxe_wrong"}).status_code == 401


def test_spending_limit_and_usage(served):
    server, keys = served
    with server.client(keys["capped"]) as capped:
        photo = upload(capped, PHOTO)["id"]
        for _ in range(2):
            assert wait_done(capped, create(capped, image_url=photo, num_inference_steps=1))["status"] == "success"
        refused = capped.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo}})
        assert refused.status_code == 402 and "$0.05 spending limit" in refused.json()["error"]
        usage = capped.get("/v1/usage").json()
        assert usage["total"] == {"images": 2, "predictions": 2, "cost": 0.05}


def test_cancel_queued_and_running(served):
    server, keys = served
    with server.client(keys["bob"]) as bob:
        photo = upload(bob, LARGE)["id"]
        running = create(bob, image_url=photo, num_inference_steps=50)
        queued = create(bob, image_url=photo, num_inference_steps=1)  # one worker: it waits behind the first
        assert bob.post(f"/v1/prediction/{queued}/cancel").json()["status"] == "cancelled"
        steps = []
        with bob.stream("GET", f"/v1/prediction/{running}/stream") as events:  # SSE progress, from the database's
            for line in events.iter_lines():
                if line.startswith("data:") and '"step"' in line:
                    steps.append(line)
                    if len(steps) == 2:
                        assert bob.post(f"/v1/prediction/{running}/cancel").status_code == 200
                if line.startswith("event: done"):
                    break
        assert wait_done(bob, running)["status"] == "cancelled" and 2 <= len(steps) < 50
        assert bob.get(f"/v1/prediction/{queued}").json()["started_at"] is None


def test_webhook_is_stored_and_delivered(served, receiver):
    server, keys = served
    with server.client(keys["alice"]) as alice:
        photo = upload(alice, PHOTO)["id"]
        body = {"input": {"prompt": "x", "image_url": photo, "num_inference_steps": 1}, "webhook_url": receiver}
        prediction_id = alice.post("/v1/prediction", json=body).json()["predictionID"]
        assert wait_done(alice, prediction_id)["status"] == "success"
        deadline = time.monotonic() + 30
        while not any(hook["exec_id"] == prediction_id for hook in Hooks.received):
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.1)
        hook = next(hook for hook in Hooks.received if hook["exec_id"] == prediction_id)
        assert hook["status"] == "succeeded" and len(hook["output"]) == 1
        deliveries = alice.get(f"/v1/prediction/{prediction_id}/webhooks").json()["deliveries"]
        assert [(d["state"], d["attempts"]) for d in deliveries] == [("delivered", 1)]  # the outbox row, ended
