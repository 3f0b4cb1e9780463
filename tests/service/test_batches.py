"""Batches over HTTP on a real server (the tiny model, 1 step, a few images each): created from URLs, file ids
or a zip, counted and ended as their predictions run, cancelled, downloaded as results.zip, announced by one
signed webhook, refused whole when they cannot be admitted, and fair to other keys' single predictions."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fluxedit.service.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done
from tests.service.test_keys_and_billing import make_key

PHOTO = encoded(pattern(64, 48), "PNG")
STEP = {"prompt": "make it blue", "num_inference_steps": 1}
PER_KEY = 5  # the per-key queue limit of single predictions: batches longer than it are still taken
MAX_BATCH = 400
SECRET = "whsec_batch"


class Images:
    """A local web server: GET /img/N.png answers a small PNG (a different one for each N); POSTs are kept
    (a webhook receiver)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict, bytes]] = []

    @contextmanager
    def serve(self) -> Iterator[str]:
        images = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                number = int(self.path.rsplit("/", 1)[-1].split(".")[0])
                body = encoded(pattern(64, 48, seed=number), "PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                images.posts.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    data = tmp_path_factory.mktemp("batches") / "data"
    keys = {name: make_key(data, name) for name in ("alice", "bob", "carol", "dave")}
    keys["capped"] = make_key(data, "capped", "--limit", "0.05")
    env = {"FLUXEDIT_MAX_QUEUE_PER_KEY": str(PER_KEY), "FLUXEDIT_MAX_BATCH_IMAGES": str(MAX_BATCH),
           "FLUXEDIT_RATE_LIMIT": "0"}  # fmt: skip
    images = Images()
    with images.serve() as web, Server(data, "--workers", "1", "--allow-private-urls", env=env) as server:
        yield server, keys, web, images


def wait_batch(client, batch_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["completed_at"] is not None:
            return batch
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} did not end: {batch}")


def all_items(client, batch_id: str, limit: int = 2) -> list[dict]:
    items, cursor = [], None
    while True:
        page = client.get(
            f"/v1/batches/{batch_id}/items", params={"limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next"]
        if cursor is None:
            return items


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_batch_of_urls_and_file_ids_runs_as_predictions_and_downloads_as_a_zip(running):
    server, keys, web, _ = running
    with server.client(keys["alice"]) as alice:
        photo = upload(alice, PHOTO, "mine.png")["id"]
        body = {
            "input": STEP,
            "images": [
                f"{web}/img/1.png",
                photo,
                {"image": f"{web}/img/2.png", "prompt": "make it red", "name": "shoe-2.jpg"},
            ],
        }
        created = alice.post("/v1/batches", json=body)
        assert created.status_code == 201, created.text
        batch = created.json()
        assert batch["id"].startswith("batch_") and batch["total"] == 3 and batch["status"] == "processing"
        assert batch["input"] == STEP and batch["skipped"] == [] and batch["completed_at"] is None
        assert sum(batch["counts"].values()) == 3 and batch["progress"] == {"done": 0, "total": 3, "percent": 0.0}
        assert batch["urls"]["results"].endswith(f"/v1/batches/{batch['id']}/results.zip")

        seen_partly_done = False
        deadline = time.monotonic() + 180
        while (now := alice.get(f"/v1/batches/{batch['id']}").json())["completed_at"] is None:
            if 0 < now["progress"]["done"] < 3:
                seen_partly_done = True
                assert now["estimated_seconds_left"] is not None and now["estimated_seconds_left"] >= 0
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        ended = now
        assert seen_partly_done  # counts move as the predictions end, one by one
        assert ended["status"] == "success" and ended["counts"]["success"] == 3
        assert ended["progress"] == {"done": 3, "total": 3, "percent": 100.0} and ended["estimated_seconds_left"] == 0

        items = all_items(alice, batch["id"])
        assert [item["index"] for item in items] == [0, 1, 2]
        assert [item["name"] for item in items] == ["1.png", "mine.png", "shoe-2.jpg"]
        assert all(item["status"] == "success" and len(item["output"]) == 1 and item["seed"] for item in items)
        predictions = [wait_done(alice, item["prediction_id"]) for item in items]
        assert [p["input"]["prompt"] for p in predictions] == ["make it blue", "make it blue", "make it red"]
        assert ended["cost"] == pytest.approx(sum(p["metrics"]["cost"] for p in predictions))

        listed = alice.get("/v1/batches").json()["data"]
        assert listed[0]["id"] == batch["id"]

        results = alice.get(f"/v1/batches/{batch['id']}/results.zip")
        assert results.status_code == 200 and results.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(results.content)) as archive:
            names = sorted(archive.namelist())
            extension = items[0]["output"][0].rsplit(".", 1)[-1]
            assert names == sorted([f"1.{extension}", f"mine.{extension}", f"shoe-2.{extension}", "manifest.csv"])
            first = alice.get(items[0]["output"][0].replace(server.url, "")).content
            assert archive.read(f"1.{extension}") == first  # the output itself, byte for byte
            manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert [(row["name"], row["prediction_id"], row["status"], row["error"]) for row in manifest] == [
            (item["name"], item["prediction_id"], "success", "") for item in items
        ]
        assert [row["seed"] for row in manifest] == [item["seed"] for item in items]

    with server.client(keys["bob"]) as bob:  # another key's batch does not exist for it
        assert bob.get(f"/v1/batches/{batch['id']}").status_code == 404
        assert bob.get(f"/v1/batches/{batch['id']}/results.zip").status_code == 404


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_batch_skips_what_is_not_an_image_takes_prompts_from_its_csv_and_cancels(running):
    server, keys, _, _ = running
    data = _zip({
        "photos/a.png": encoded(pattern(64, 48, seed=5), "PNG"),
        "photos/b.jpg": encoded(pattern(64, 48, seed=6), "JPEG"),
        "photos/c.webp": encoded(pattern(64, 48, seed=7), "WEBP"),
        "photos/d.png": encoded(pattern(64, 48, seed=8), "PNG"),
        "photos/notes.txt": b"not an image",
        "photos/broken.png": b"\x89PNG but not really",
        "photos/prompts.csv": b"name,prompt\nb.jpg,make it red\nc,make it green\n",
        "__MACOSX/photos/._a.png": b"resource fork",
    })  # fmt: skip
    with server.client(keys["carol"]) as carol:
        form = {"input": json.dumps({**STEP, "num_inference_steps": 2})}
        created = carol.post("/v1/batches", files={"data": ("photos.zip", data, "application/zip")}, data=form)
        assert created.status_code == 201, created.text
        batch = created.json()
        cancelled = carol.post(f"/v1/batches/{batch['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert batch["total"] == 4
        skipped = {entry["name"]: entry["reason"] for entry in batch["skipped"]}
        assert skipped["notes.txt"] == "not a JPEG, PNG or WebP image"
        assert "broken.png" in skipped and "prompts.csv" not in skipped and len(skipped) == 2
        items = all_items(carol, batch["id"], limit=10)
        assert [item["name"] for item in items] == ["a.png", "b.jpg", "c.webp", "d.png"]
        prompts = [carol.get(f"/v1/prediction/{item['prediction_id']}").json()["input"]["prompt"] for item in items]
        assert prompts == ["make it blue", "make it red", "make it green", "make it blue"]

        ended = wait_batch(carol, batch["id"])
        assert ended["status"] == "cancelled" and ended["counts"]["created"] == 0
        assert ended["counts"]["cancelled"] >= 3  # at most the first one ran (to its end or its next step)
        assert ended["progress"]["done"] == 4
        assert carol.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelled"  # again: no change


def test_the_batch_webhook_is_sent_once_when_the_batch_ends_signed_as_prediction_webhooks(running):
    server, keys, web, images = running
    with server.client(keys["alice"]) as alice:
        body = {"input": STEP, "images": [f"{web}/img/3.png", f"{web}/img/4.png"], "webhook_url": f"{web}/hook",
                "webhook_secret": SECRET, "prediction_webhooks": True}  # fmt: skip
        before = len(images.posts)
        batch = alice.post("/v1/batches", json=body).json()
        ended = wait_batch(alice, batch["id"])
        deadline = time.monotonic() + 30
        while len(images.posts) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # nothing more comes
    calls = [(headers, json.loads(raw), raw) for headers, raw in images.posts[before:]]
    batch_calls = [call for call in calls if call[1].get("id") == batch["id"]]
    prediction_calls = [call for call in calls if "exec_id" in call[1]]
    assert len(batch_calls) == 1 and len(prediction_calls) == 2, [c[1] for c in calls]
    headers, sent, raw = batch_calls[0]
    assert verify(SECRET, headers[TIMESTAMP_HEADER], raw, headers[SIGNATURE_HEADER])
    assert sent["status"] == "success" and sent["counts"]["success"] == 2 and sent["completed_at"]
    assert sent["progress"] == ended["progress"] and sent["cost"] == ended["cost"]


def test_a_batch_that_cannot_be_admitted_is_refused_whole_naming_the_field(running):
    server, keys, web, _ = running
    with server.client(keys["capped"]) as capped:
        bad_field = capped.post(
            "/v1/batches", json={"input": {**STEP, "num_inference_steps": 99}, "images": [f"{web}/img/1.png"]}
        )
        assert bad_field.status_code == 422 and "input.num_inference_steps" in bad_field.json()["error"]
        two = [{"image": f"{web}/img/1.png", "prompt": "x"}, f"{web}/img/2.png"]  # the second has no prompt
        per_image = capped.post("/v1/batches", json={"input": {"num_inference_steps": 1}, "images": two})
        assert per_image.status_code == 422 and "images.1.prompt" in per_image.json()["error"]
        not_mine = capped.post(
            "/v1/batches", json={"input": STEP, "images": [f"{web}/img/1.png", "file_nothing0000000000"]}
        )
        assert not_mine.status_code == 422 and "images.1" in not_mine.json()["error"]
        with_image = capped.post(
            "/v1/batches", json={"input": {**STEP, "image_url": f"{web}/img/1.png"}, "images": ["x"]}
        )
        assert with_image.status_code == 422 and "input.image_url" in with_image.json()["error"]
        too_big = capped.post("/v1/batches", json={"input": STEP, "images": [f"{web}/img/1.png"] * (MAX_BATCH + 1)})
        assert too_big.status_code == 422 and f"at most {MAX_BATCH}" in too_big.json()["error"]
        # $0.025 an image: three are $0.075, past the key's $0.05 limit, though one or two would fit.
        over = capped.post("/v1/batches", json={"input": STEP, "images": [f"{web}/img/{n}.png" for n in range(3)]})
        assert over.status_code == 402, over.text
        assert "this batch" in over.json()["error"] and "$0.05 spending limit" in over.json()["error"]
        assert capped.get("/v1/batches").json()["data"] == []  # nothing of it was stored
        assert capped.get("/v1/prediction").json()["data"] == []


def test_another_keys_single_prediction_runs_after_at_most_one_of_a_long_batch(running):
    server, keys, _, _ = running
    with server.client(keys["dave"]) as dave, server.client(keys["bob"]) as bob:
        photo, bobs = upload(dave, PHOTO)["id"], upload(bob, PHOTO)["id"]
        count = 4 * PER_KEY  # longer than the per-key queue limit of single predictions: taken all the same
        created = dave.post("/v1/batches", json={"input": STEP, "images": [photo] * count})
        assert created.status_code == 201, created.text
        batch = created.json()
        deadline = time.monotonic() + 120
        while dave.get(f"/v1/batches/{batch['id']}").json()["counts"]["created"] == count:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        single = wait_done(bob, create(bob, image_url=bobs, num_inference_steps=1))
        dave.post(f"/v1/batches/{batch['id']}/cancel")
        wait_batch(dave, batch["id"])
        started = [dave.get(f"/v1/prediction/{item['prediction_id']}").json()["started_at"]
                   for item in all_items(dave, batch["id"], limit=100)]  # fmt: skip
    assert single["status"] == "success"
    ahead = [stamp for stamp in started if stamp and moment(stamp) < moment(single["started_at"])]
    assert 1 <= len(ahead) <= 2, started  # the one running when it came (and maybe the one starting then)


def test_a_large_batch_is_created_in_one_go_and_cancelled_in_one_go(running):
    server, keys, _, _ = running
    with server.client(keys["bob"]) as bob:
        photo = upload(bob, encoded(pattern(64, 48, seed=9), "PNG"))["id"]
        started = time.monotonic()
        created = bob.post("/v1/batches", json={"input": STEP, "images": [photo] * MAX_BATCH})
        took = time.monotonic() - started
        assert created.status_code == 201, created.text
        batch = created.json()
        assert batch["total"] == MAX_BATCH and batch["cost"] == 0
        assert took < 20, took  # loose: one transaction of inserts, not one create per image (bench/batch.py)
        cancelled = bob.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["counts"]["created"] == 0 and cancelled["counts"]["cancelled"] >= MAX_BATCH - 2
        ended = wait_batch(bob, batch["id"])
        assert ended["progress"]["done"] == MAX_BATCH
