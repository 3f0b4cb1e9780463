"""Webhooks as a receiver sees them, and the safety checker through the API."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from fluxedit.engine.tiny_safety import write_tiny_safety_model
from fluxedit.service.webhooks import verify
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

PHOTO = encoded(pattern(640, 480), "PNG")
SECRET = "whsec_test_secret"


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list] = []  # shared by every request the test server handles

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers.get("X-Webhook-Timestamp")
        signature = self.headers.get("X-Webhook-Signature")
        valid = signature is not None and verify(SECRET, timestamp, body, signature)
        self.received.append({"body": json.loads(body), "signed": signature is not None, "valid": valid})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver.received
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("hooks") / "data", "--allow-private-urls") as running:
        yield running


def create_with_hook(client, url, secret=SECRET, **input_fields) -> str:
    body = {"input": {"prompt": "x", "num_inference_steps": 1, **input_fields}, "webhook_url": url}
    if secret:
        body["webhook_secret"] = secret
    response = client.post("/v1/prediction", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictionID"]


def delivered(received, prediction_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in received:
            if item["body"]["exec_id"] == prediction_id:
                return item
        time.sleep(0.05)
    return None


def test_success_webhook_is_signed_and_carries_the_outputs(server, receiver):
    url, received = receiver
    with server.client() as client:
        prediction_id = create_with_hook(client, url, image_url=upload(client, PHOTO)["id"])
        prediction = wait_done(client, prediction_id)
    item = delivered(received, prediction_id)
    assert item["signed"] and item["valid"]
    assert item["body"] == {
        "exec_id": prediction_id, "flow_id": None, "status": "succeeded", "output": prediction["output"], "error": "",
    }  # fmt: skip


def test_failure_webhook_and_no_signature_without_a_secret(server, receiver):
    url, received = receiver
    with server.client() as client:
        prediction_id = create_with_hook(client, url, secret=None, image_url="http://127.0.0.1:9/missing.png")
        assert wait_done(client, prediction_id)["status"] == "error"
    item = delivered(received, prediction_id)
    assert not item["signed"]
    assert item["body"]["status"] == "failed"
    assert item["body"]["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert item["body"]["error"] == item["body"]["output"]["error_message"]


def test_no_webhook_on_cancel(server, receiver):
    url, received = receiver
    with server.client() as client:
        photo = upload(client, PHOTO)["id"]
        blocker = create(client, image_url=photo, num_inference_steps=30)
        prediction_id = create_with_hook(client, url, image_url=photo)
        client.post(f"/v1/prediction/{prediction_id}/cancel")
        client.post(f"/v1/prediction/{blocker}/cancel")
        assert wait_done(client, prediction_id)["status"] == "cancelled"
    assert delivered(received, prediction_id, timeout=2) is None


def test_a_hanging_receiver_does_not_hold_up_the_queue(tmp_path):
    # A receiver that takes the connection and never answers: every try hangs until the (long) webhook timeout.
    # The queue must not wait on it: all three predictions end while the first one's webhook is still on its
    # first try.
    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(16)  # never accepted: connects succeed, no answer ever comes
        hook = f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"
        env = {"FLUXEDIT_WEBHOOK_TIMEOUT": "600"}
        with Server(tmp_path / "data", "--allow-private-urls", env=env) as server, server.client() as client:
            photo = upload(client, PHOTO)["id"]
            ids = [create_with_hook(client, hook, image_url=photo) for _ in range(3)]
            assert all(wait_done(client, i)["status"] == "success" for i in ids)
            first = client.get(f"/v1/prediction/{ids[0]}/webhooks").json()["deliveries"]
    assert len(first) == 1 and first[0]["state"] == "sending" and first[0]["tries"] == []


@pytest.mark.parametrize(("flag_everything", "expected"), [(False, "success"), (True, "error")])
def test_safety_model_flags_outputs(tmp_path, flag_everything, expected):
    model = write_tiny_safety_model(tmp_path / "safety", flag_everything=flag_everything)
    with Server(tmp_path / "data", "--safety-model", str(model)) as server, server.client() as client:
        photo = upload(client, PHOTO)["id"]
        checked = wait_done(client, create(client, image_url=photo, num_inference_steps=1, num_images=2))
        unchecked = wait_done(client, create(client, image_url=photo, num_inference_steps=1,
                                             enable_safety_checker=False))  # fmt: skip
    assert checked["status"] == expected
    if flag_everything:
        assert checked["output"] == {
            "error_code": "PROVIDER_REJECTED", "error_message": "the safety checker flagged every output image",
        }  # fmt: skip
    else:
        assert checked["has_nsfw_concepts"] == [False, False]
    assert unchecked["status"] == "success" and unchecked["has_nsfw_concepts"] is None
