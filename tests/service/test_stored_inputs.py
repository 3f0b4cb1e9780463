"""Input images are kept once, as files: predictions name them, views show their URLs; views survive deleted or
lost files; this server's own URLs are resolved here, so a wrong one answers "not found", never "refused"."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done
from tests.service.test_keys_and_billing import make_key

PHOTO = encoded(pattern(64, 48), "PNG")
MISSING_ID = "file_" + "A" * 22  # shaped like an id of ours, but no file has it


def noise_png(width: int, height: int, seed: int = 3) -> bytes:
    """A PNG that does not compress: its size is about width x height x 3 bytes."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BIG = noise_png(820, 820)  # ~2 MB, ~2.7 MB as a data URI
BIG_URI = "data:image/png;base64," + base64.b64encode(BIG).decode()


class Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self):
        Hooks.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hook_url():
    # 127.0.0.2: a loopback address the server below may reach (--allow-network), unlike its own 127.0.0.1.
    receiver = ThreadingHTTPServer(("127.0.0.2", 0), Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{receiver.server_address[1]}/hook"
    receiver.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("stored") / "data", "--allow-network", "127.0.0.2/32") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


def database_bytes(server: Server) -> int:
    return sum(path.stat().st_size for path in server.data_dir.glob("fluxedit.db*"))


def copies_on_disk(server: Server, data: bytes) -> int:
    digest = hashlib.sha256(data).hexdigest()
    files = (path for path in (server.data_dir / "files").rglob("file_*") if path.is_file())
    return sum(1 for path in files if hashlib.sha256(path.read_bytes()).hexdigest() == digest)


def file_id_of(url: str) -> str:
    return url.rstrip("/").removesuffix("/content").rsplit("/", 1)[-1].split(".")[0]


# ---- data URIs: stored once, shown as a URL ------------------------------------------------------------------


def test_a_data_uri_is_kept_as_a_file_and_every_view_shows_its_url(server, client):
    before = database_bytes(server)
    prediction_id = create(client, image_url=BIG_URI, image_urls=[BIG_URI], num_inference_steps=1)
    ended = wait_done(client, prediction_id)
    assert ended["status"] == "success", ended["output"]
    grown = database_bytes(server) - before
    assert grown < len(BIG) // 4, f"the database grew {grown} bytes for a {len(BIG)}-byte input"

    url = ended["input"]["image_url"]
    assert url.startswith(server.url + "/v1/files/") and ended["input"]["image_urls"] == [url]  # one file, twice
    assert client.get(url).content == BIG  # the same bytes, with the same key
    replicate = client.get(f"/v1/predictions/{prediction_id}").json()
    assert replicate["input"]["input_image"] == url
    answers = {
        "seed get": client.get(f"/v1/prediction/{prediction_id}"),
        "seed list": client.get("/v1/prediction", params={"limit": 100}),
        "replicate get": client.get(f"/v1/predictions/{prediction_id}"),
        "replicate list": client.get("/v1/predictions"),
        "stream": client.get(f"/v1/prediction/{prediction_id}/stream"),
    }
    for name, answer in answers.items():
        assert answer.status_code == 200, name
        assert "base64," not in answer.text and len(answer.content) < 20_000, (name, len(answer.content))
    assert copies_on_disk(server, BIG) == 1


def test_the_same_image_sent_again_is_the_same_file(server, client):
    photo = noise_png(96, 64, seed=11)
    first, second = upload(client, photo), upload(client, photo)
    assert first["id"] == second["id"]
    uri = "data:image/png;base64," + base64.b64encode(photo).decode()
    by_uri = [create(client, image_url=uri, num_inference_steps=1) for _ in range(2)]
    for prediction_id in by_uri:
        client.post(f"/v1/prediction/{prediction_id}/cancel")
        assert file_id_of(client.get(f"/v1/prediction/{prediction_id}").json()["input"]["image_url"]) == first["id"]
    assert copies_on_disk(server, photo) == 1


def test_a_webhook_carries_the_file_url_not_the_data(client, hook_url):
    Hooks.received.clear()
    body = {"version": "1.0", "webhook": hook_url, "webhook_events_filter": ["completed"],
            "input": {"prompt": "make it blue", "input_image": BIG_URI, "num_inference_steps": 1}}  # fmt: skip
    response = client.post("/v1/predictions", json=body)
    assert response.status_code == 201, response.text
    assert "base64," not in response.text and len(response.content) < 20_000
    wait_done(client, response.json()["id"])
    deadline = time.monotonic() + 60
    while not Hooks.received and time.monotonic() < deadline:
        time.sleep(0.1)
    (payload,) = Hooks.received
    assert b"base64," not in payload and len(payload) < 20_000
    assert json.loads(payload)["input"]["input_image"].startswith("http")


# ---- deleted and lost files ----------------------------------------------------------------------------------


def test_deleting_an_output_leaves_every_view_working_and_says_data_removed(server, client):
    prediction_id = create(client, image_url=upload(client, PHOTO)["id"], num_inference_steps=1)
    (output,) = wait_done(client, prediction_id)["output"]
    assert client.delete(f"/v1/files/{file_id_of(output)}").status_code == 204
    assert httpx.get(output).status_code == 404

    seed = client.get(f"/v1/prediction/{prediction_id}")
    assert seed.status_code == 200 and seed.json()["status"] == "success"
    assert seed.json()["output"] == [] and seed.json()["data_removed"] is True
    replicate = client.get(f"/v1/predictions/{prediction_id}")
    assert replicate.status_code == 200 and replicate.json()["output"] is None
    assert replicate.json()["data_removed"] is True
    for path in ("/v1/prediction", "/v1/predictions", f"/v1/prediction/{prediction_id}/stream"):
        answer = client.get(path)
        assert answer.status_code == 200 and output not in answer.text, path
    listed = {p["id"]: p for p in client.get("/v1/prediction", params={"limit": 100}).json()["data"]}
    assert listed[prediction_id]["data_removed"] is True


def test_an_input_of_unfinished_work_cannot_be_deleted_until_it_ends(client):
    photo = upload(client, noise_png(80, 60, seed=21))["id"]
    prediction_id = create(client, image_url=photo, num_inference_steps=50)
    refused = client.delete(f"/v1/files/{photo}")
    assert refused.status_code == 409 and prediction_id in refused.json()["error"]
    client.post(f"/v1/prediction/{prediction_id}/cancel")
    assert wait_done(client, prediction_id)["status"] == "cancelled"
    assert client.delete(f"/v1/files/{photo}").status_code == 204
    shown = client.get(f"/v1/prediction/{prediction_id}").json()
    assert shown["data_removed"] is True and shown["input"]["image_url"] == photo  # what was sent stays shown


def test_files_lost_from_disk_answer_404_and_views_say_data_removed(server, client):
    photo = upload(client, noise_png(72, 54, seed=31))
    prediction_id = create(client, image_url=photo["id"], num_inference_steps=1)
    (output,) = wait_done(client, prediction_id)["output"]
    for file_id in (file_id_of(output), photo["id"]):
        (path,) = (server.data_dir / "files").rglob(file_id)
        path.unlink()  # gone from the disk while its record stays (a hand-cleaned folder, a lost volume)
    assert httpx.get(output).status_code == 404
    assert client.get(photo["urls"]["content"]).status_code == 404
    shown = client.get(f"/v1/prediction/{prediction_id}")
    assert shown.status_code == 200 and shown.json()["output"] == [] and shown.json()["data_removed"] is True
    # Sending the same bytes again brings the file back under its id.
    assert upload(client, noise_png(72, 54, seed=31))["id"] == photo["id"]
    assert client.get(photo["urls"]["content"]).status_code == 200


# ---- this server's own URLs ----------------------------------------------------------------------------------


def own_urls(server: Server, deleted: str) -> list[str]:
    return [
        f"{server.url}/outputs/{MISSING_ID}.png",
        f"{server.url}/outputs/missing.png",
        f"http://localhost:{server.port}/outputs/{MISSING_ID}.jpg",  # another name of this server
        f"{server.url}/v1/files/{MISSING_ID}",
        f"{server.url}/v1/files/{MISSING_ID}/content",  # Replicate's file URLs have these forms
        f"{server.url}/v1/files/{deleted}/content",
        MISSING_ID,
    ]


def test_a_missing_own_file_is_not_found_in_every_dialect(server, client):
    deleted = upload(client, noise_png(70, 50, seed=41))["id"]
    assert client.delete(f"/v1/files/{deleted}").status_code == 204
    photo = upload(client, PHOTO)["id"]
    for url in own_urls(server, deleted):
        seed = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo, "image_urls": [url]}})
        assert seed.status_code == 422, (url, seed.text)
        message = seed.json()["error"]
        assert message.startswith("input.image_urls.0: ") and "not found" in message, message
        body = {"version": "1.0", "input": {"prompt": "x", "input_image": url}}
        replicate = client.post("/v1/predictions", json=body)
        assert replicate.status_code == 422, (url, replicate.text)
        (invalid,) = replicate.json()["invalid_fields"]
        assert invalid["field"] == "input.input_image" and "not found" in invalid["description"]


def test_an_own_url_that_names_no_file_says_so(server, client):
    response = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": server.url + "/health"}})
    assert response.status_code == 422
    assert response.json()["error"].startswith("input.image_url: is a URL of this server that names no image")


def test_an_output_reached_by_another_name_of_this_server_is_used_directly(server, client):
    first = wait_done(client, create(client, image_url=upload(client, PHOTO)["id"], num_inference_steps=1))
    other_name = first["output"][0].replace("127.0.0.1", "localhost")
    second = wait_done(client, create(client, image_url=other_name, num_inference_steps=1))
    assert second["status"] == "success", second["output"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    data = tmp_path_factory.mktemp("stored-keys") / "data"
    keys = {"alice": make_key(data, "alice"), "bob": make_key(data, "bob")}
    with Server(data) as running:
        yield running, keys


def test_another_keys_files_are_not_found_but_its_output_urls_work(keyed):
    server, keys = keyed
    with server.client(keys["alice"]) as alice, server.client(keys["bob"]) as bob:
        photo = upload(alice, PHOTO)
        made = wait_done(alice, create(alice, image_url=photo["id"], num_inference_steps=1))
        for reference in (photo["id"], photo["url"], photo["urls"]["content"]):
            response = bob.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": reference}})
            assert response.status_code == 422, reference
            assert "not found" in response.json()["error"] and "is not a file of yours" in response.json()["error"]
        # An output URL is a capability (it needs no key): bob may edit it further, from a copy of his own.
        edited = wait_done(bob, create(bob, image_url=made["output"][0], num_inference_steps=1))
        assert edited["status"] == "success", edited["output"]
        assert alice.delete(f"/v1/files/{file_id_of(made['output'][0])}").status_code == 204
        assert wait_done(bob, edited["id"])["data_removed"] is False  # his copy stays
