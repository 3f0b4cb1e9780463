"""fluxedit.Client against a real `fluxedit serve --model tiny` on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from fluxedit import Client
from fluxedit.client import ApiError, EditedImage, PredictionCancelled, PredictionFailed, WaitTimeout
from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server

FAST = {"num_inference_steps": 1, "seed": 7}  # the tiny model: one step is enough to exercise everything
KONTEXT_4_3 = (1184, 880)  # the preferred Kontext size for a 4:3 input (resolution_mode match_input)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("client") / "data"


@pytest.fixture(scope="module")
def api_key(data_dir) -> str:
    # A key before the start: the server then requires it, so every test also checks the client's auth header.
    data_dir.mkdir(parents=True)
    created = subprocess.run(
        [FLUXEDIT, "keys", "create", "client-tests", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(data_dir, api_key):
    with Server(data_dir, "--allow-private-urls") as running:
        yield running


@pytest.fixture(scope="module")
def client(server, api_key):
    with Client(server.url, api_key=api_key, timeout=60) as fluxedit:
        yield fluxedit


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    pattern(64, 48).save(path)
    return path


@pytest.fixture(scope="module")
def photo_id(client, photo_path) -> str:
    return client.upload(photo_path)["id"]


@pytest.fixture(scope="module")
def finished(client, photo_id) -> dict:
    """One successful prediction, shared by the tests that only read an ended one."""
    return client.wait(client.create(photo_id, "make it blue", **FAST)["id"], timeout=60)


@contextmanager
def loopback_http(status: int, received: list[bytes] | None = None) -> Iterator[str]:
    """A loopback HTTP server answering every request with `status`, keeping POST bodies; yields a URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if received is not None:
                received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/missing.png"
    finally:
        httpd.shutdown()
        httpd.server_close()


def only(images: list[EditedImage]) -> EditedImage:
    assert len(images) == 1
    return images[0]


# ---- edit --------------------------------------------------------------------------------------


def test_edit_from_a_path(client, photo_path, tmp_path):
    image = only(client.edit(photo_path, "make it blue", **FAST))
    picture = image.to_pil()
    assert picture.format == "PNG" and image.content_type == "image/png"  # the input's format by default
    assert picture.size == KONTEXT_4_3
    metadata = image.metadata
    assert (metadata["width"], metadata["height"]) == KONTEXT_4_3
    assert metadata["prompt"] == "make it blue" and metadata["seed"] == 7 and metadata["num_inference_steps"] == 1
    saved = image.save(tmp_path)  # a folder: the output's own name
    assert saved.parent == tmp_path and saved.suffix == ".png" and saved.read_bytes() == image.data
    assert image.save(tmp_path / "named.png").read_bytes() == image.data


def test_edit_from_bytes(client):
    image = only(client.edit(encoded(pattern(48, 64), "JPEG"), "make it red", **FAST))
    assert image.content_type == "image/jpeg" and image.url.endswith(".jpg")
    assert image.to_pil().size == (image.metadata["width"], image.metadata["height"])
    assert image.to_pil().width < image.to_pil().height  # a portrait input stays portrait


def test_edit_from_a_pil_image_with_more_inputs(client):
    images = client.edit(pattern(64, 48), "make it green", output_format="webp", num_images=2, **FAST)
    assert len(images) == 2 and all(image.content_type == "image/webp" for image in images)
    assert [image.to_pil().size for image in images] == [KONTEXT_4_3] * 2
    assert [image.metadata["seed"] for image in images] == [7, 8]  # one seed per image of the batch


def test_edit_with_a_reference_image(client, photo_path):
    reference = io.BytesIO(encoded(pattern(32, 32, seed=5), "PNG"))
    image = only(client.edit(photo_path, "put the pattern on it", references=[reference], **FAST))
    assert image.to_pil().size == KONTEXT_4_3
    newest = next(client.list(limit=1))
    assert newest["status"] == "success" and newest["output"] == [image.url]
    (reference_id,) = newest["input"]["image_urls"]
    assert reference_id.startswith("file_")  # uploaded first, then named by its id


def test_edit_with_a_mask_strength_and_output_resolution(client, photo_path, tmp_path):
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 32, 24))  # white: the part that may change
    for given in (mask, encoded(mask, "PNG")):  # a PIL image or bytes, uploaded like any image
        only(client.edit(photo_path, "a red hat", mask=given, strength=0.6, output_resolution="input", **FAST))
        newest = next(client.list(limit=1))
        assert newest["status"] == "success" and newest["input"]["mask_url"].startswith("file_")
        assert newest["input"]["strength"] == 0.6 and newest["input"]["output_resolution"] == "input"
    with pytest.raises(ApiError) as caught:
        client.edit(photo_path, "a red hat", mask=Image.new("L", (32, 32), 255), **FAST)
    assert caught.value.status_code == 422
    assert caught.value.message.startswith("input.mask_url: is 32x32 but the image to edit (input.image_url) is 64x48")
    with pytest.raises(TypeError, match="mask"):
        client.edit(photo_path, "x", mask_url="file_abcdefghijklmnop")


def test_iterative_editing_from_an_output_url(client, finished):
    first = only(client.download(finished))
    second = only(client.edit(first.url, "now add a hat", **FAST))
    assert second.url != first.url and second.to_pil().size == KONTEXT_4_3
    assert second.metadata["prompt"] == "now add a hat"
    assert next(client.list(limit=1))["input"]["image_url"] == first.url  # passed as is, resolved by the server


# ---- create, get, wait, cancel -----------------------------------------------------------------


def test_create_get_wait(client, photo_id):
    received: list[bytes] = []
    with loopback_http(200, received) as hook:
        created = client.create(
            photo_id, "make it blue", webhook_url=hook, webhook_secret="whsec_test", num_inference_steps=2, seed=11
        )
        ended = client.wait(created["id"], timeout=60)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)  # the webhook goes out in the background, just after the end
    assert created["status"] in ("created", "starting", "processing", "success")
    assert created["input"]["image_url"] == photo_id and created["input"]["num_inference_steps"] == 2
    assert client.get(created["id"])["id"] == created["id"]
    assert ended["status"] == "success" and ended["seed"] == 11
    assert json.loads(received[0])["exec_id"] == created["id"]  # webhook_url and its secret were passed on
    assert client.get(created["id"], wait=30)["status"] == "success"  # an ended one answers at once
    (image,) = client.download(ended)
    assert image.to_pil().size == (ended["width"], ended["height"])
    assert client.cancel(created["id"])["status"] == "success"  # an ended prediction stays as it was


def test_cancel_a_queued_prediction(client, photo_id):
    slow = client.create(photo_id, "take your time", num_inference_steps=50)
    queued = client.create(photo_id, "never runs", num_inference_steps=2)
    try:
        with pytest.raises(WaitTimeout):
            client.wait(queued["id"], timeout=0.5)
        cancelled = client.cancel(queued["id"])
        assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    finally:
        client.cancel(slow["id"])  # frees the worker for the other tests
    assert client.wait(slow["id"], timeout=60)["status"] == "cancelled"
    with pytest.raises(PredictionCancelled) as raised:
        client.download(client.wait(queued["id"]))
    assert raised.value.prediction["id"] == queued["id"]


def test_list_follows_cursors_newest_first(client, photo_id):
    ids = [client.create(photo_id, f"number {n}", **FAST)["id"] for n in range(3)]
    for prediction_id in ids:
        client.cancel(prediction_id)  # only the listing matters here: spare the worker
    newest = [p["id"] for p in itertools.islice(client.list(limit=1), 3)]  # three pages of one
    assert newest == ids[::-1]
    everything = list(client.list(limit=100))
    assert [p["id"] for p in everything][:3] == ids[::-1]
    assert len({p["id"] for p in everything}) == len(everything)
    created = [p["created_at"] for p in everything]
    assert created == sorted(created, reverse=True)


# ---- stream ------------------------------------------------------------------------------------


def test_stream_status_progress_previews_output_done(client, photo_id):
    prediction = client.create(photo_id, "make it blue", num_inference_steps=3)
    events = list(client.stream(prediction["id"], previews=True))
    names = [event["event"] for event in events]
    assert names[0] == "status" and names[-2:] == ["output", "done"]
    steps = [event["data"]["step"] for event in events if event["event"] == "progress"]
    assert len(steps) >= 2 and steps == sorted(set(steps)) and steps[-1] == 3  # [1, 2, 3] unless we came late
    assert all(event["data"]["total"] == 3 for event in events if event["event"] == "progress")
    previews = [event["data"] for event in events if event["event"] == "preview"]
    assert previews and all(p["image"].startswith("data:image/jpeg;base64,") for p in previews)
    output = events[-2]["data"]
    assert output["id"] == prediction["id"] and output["status"] == "success" and len(output["output"]) == 1
    assert events[-1]["data"] == {"status": "success"}


def test_stream_of_an_ended_prediction(client, finished):
    events = list(client.stream(finished["id"]))
    assert [event["event"] for event in events] == ["status", "output", "done"]
    assert events[0]["data"] == {"id": finished["id"], "status": "success"}
    assert events[1]["data"]["output"] == finished["output"]


# ---- errors ------------------------------------------------------------------------------------


def test_a_failed_download_raises_prediction_failed(client):
    with loopback_http(404) as url, pytest.raises(PredictionFailed) as raised:
        client.edit(url, "make it blue", **FAST)
    failure = raised.value
    assert failure.error_code == "INPUT_DOWNLOAD_ERROR" and "404" in failure.error_message
    assert failure.prediction["status"] == "error"
    assert "INPUT_DOWNLOAD_ERROR" in str(failure)


def test_an_input_over_its_limit_raises_api_error_422(client, photo_id):
    with pytest.raises(ApiError) as raised:
        client.edit(photo_id, "make it blue", num_inference_steps=80)
    assert raised.value.status_code == 422
    assert raised.value.message == "input.num_inference_steps: must be at most 50 (got 80)"


def test_other_api_errors(client):
    with pytest.raises(ApiError) as raised:
        client.get("doesnotexist")
    assert (raised.value.status_code, raised.value.message) == (404, "prediction doesnotexist not found")
    with pytest.raises(ApiError) as raised:
        client.upload(b"not an image")
    assert raised.value.status_code == 422 and raised.value.message.startswith("file:")
    with pytest.raises(TypeError, match="image_url"):
        client.create("file_0123456789abcdef", "x", image_url="https://example.com/a.png")


def test_upload_and_api_key_sources(client, server, api_key, photo_path, monkeypatch):
    with photo_path.open("rb") as handle:
        record = client.upload(handle)
    assert record["id"].startswith("file_") and record["name"] == "photo.png"
    assert (record["width"], record["height"], record["content_type"]) == (64, 48, "image/png")
    monkeypatch.delenv("FLUXEDIT_API_KEY", raising=False)
    with Client(server.url) as anonymous, pytest.raises(ApiError) as raised:
        anonymous.upload(photo_path)
    assert raised.value.status_code == 401 and "API key is required" in raised.value.message
    with Client(server.url, api_key="wrong") as wrong, pytest.raises(ApiError) as raised:
        next(wrong.list())
    assert raised.value.status_code == 401 and "not valid" in raised.value.message
    monkeypatch.setenv("FLUXEDIT_BASE_URL", server.url)
    monkeypatch.setenv("FLUXEDIT_API_KEY", api_key)
    with Client() as from_env:
        assert from_env.base_url == server.url
        assert next(from_env.list(limit=1))["id"]


def test_importing_fluxedit_stays_light():
    code = (
        "import sys, fluxedit; light = 'httpx' not in sys.modules; fluxedit.Client; "
        "assert light and not any(m == 'torch' or m.startswith('fluxedit.engine') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_pil_round_trips(tmp_path):
    data = encoded(pattern(8, 6), "PNG")
    image = EditedImage(url="http://x/outputs/file_abc.png", data=data, content_type="image/png")
    assert image.filename == "file_abc.png"
    assert image.to_pil().size == (8, 6) and image.metadata is None
    assert Image.open(image.save(tmp_path / "out.png")).size == (8, 6)


# ---- batches -----------------------------------------------------------------------------------


def test_a_batch_of_paths_file_ids_and_own_prompts_runs_and_downloads(client, photo_path, photo_id, tmp_path):
    other = tmp_path / "other.png"
    pattern(64, 48, seed=3).save(other)
    batch = client.batch([photo_path, photo_id, {"image": other, "prompt": "make it red"}], "make it blue", **FAST)
    assert batch["total"] == 3 and batch["status"] == "processing"
    ended = client.wait_batch(batch["id"], timeout=120, poll=0.2)
    assert ended["status"] == "success" and ended["counts"]["success"] == 3 and ended["progress"]["percent"] == 100
    items = list(client.batch_items(batch["id"], limit=2))  # three items: two pages
    assert [item["name"] for item in items] == ["photo.png", "photo.png", "other.png"]
    assert [client.get(item["prediction_id"])["input"]["prompt"] for item in items] == [
        "make it blue", "make it blue", "make it red"
    ]  # fmt: skip
    saved = client.download_batch(batch["id"], tmp_path / "results.zip")
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        manifest = archive.read("manifest.csv").decode().splitlines()
    extension = items[0]["output"][0].rsplit(".", 1)[-1]
    assert sorted(names) == sorted([f"photo.{extension}", f"photo-1.{extension}", f"other.{extension}", "manifest.csv"])
    assert manifest[0] == "name,prediction_id,status,error,seed" and len(manifest) == 4


def test_a_zip_batch_is_uploaded_whole_and_cancelled(client, tmp_path):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(3):
            archive.writestr(f"p{number}.png", encoded(pattern(64, 48, seed=number), "PNG"))
        archive.writestr("readme.md", "not an image")
    batch = client.batch(path, "make it blue", num_inference_steps=2)
    assert batch["total"] == 3 and batch["skipped"] == [
        {"name": "readme.md", "reason": "not a JPEG, PNG or WebP image"}
    ]
    assert client.cancel_batch(batch["id"])["status"] == "cancelled"
    ended = client.wait_batch(batch["id"], timeout=120, poll=0.2)
    assert ended["status"] == "cancelled" and ended["counts"]["created"] == 0 and ended["progress"]["done"] == 3
    with pytest.raises(ApiError) as missing:
        client.get_batch("batch_nothing")
    assert missing.value.status_code == 404
