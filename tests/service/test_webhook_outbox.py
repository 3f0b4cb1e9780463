"""Webhooks survive the server: a delivery pending when it is killed (-9) or stopped arrives after the restart,
exactly once and correctly signed, and the delivery log shows each try."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
import replicate
from replicate.webhook import WebhookSigningSecret

from fluxedit.service.webhooks import verify
from tests.api.servers import Receiver, make_key
from tests.service.server import Server, free_port, wait_done

MISSING = "http://127.0.0.1:9/missing.png"  # refuses connections: the prediction fails at once, no model run
SECRET = "whsec_seed_secret"
MODEL = "black-forest-labs/flux-kontext-dev"
QUICK_RETRIES = {  # tries every half second at most, for five minutes
    "FLUXEDIT_WEBHOOK_RETRY_BASE": "0.2",
    "FLUXEDIT_WEBHOOK_RETRY_MAX_DELAY": "0.5",
    "FLUXEDIT_WEBHOOK_RETRY_WINDOW": "300",
}


def delivery_log(client: httpx.Client, prediction_id: str) -> list[dict]:
    response = client.get(f"/v1/prediction/{prediction_id}/webhooks")
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise TimeoutError(what)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_pending_webhook_arrives_after_a_restart_exactly_once_and_signed(tmp_path, stop_signal):
    data = tmp_path / "data"
    key = make_key(data, "alice")
    hook = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there yet
    server = Server(data, "--allow-private-urls", env=QUICK_RETRIES).start()
    try:
        with server.client(key) as client:
            body = {"input": {"prompt": "x", "image_url": MISSING}, "webhook_url": hook, "webhook_secret": SECRET}
            seed_id = client.post("/v1/prediction", json=body).json()["predictionID"]
            replicate_client = replicate.Client(api_token=key, base_url=server.url)
            replicate_id = replicate_client.predictions.create(
                model=MODEL, input={"prompt": "x", "input_image": MISSING},
                webhook=hook, webhook_events_filter=["completed"],
            ).id  # fmt: skip
            standard_secret = replicate_client.webhooks.default.secret()
            assert wait_done(client, seed_id)["status"] == "error"
            assert wait_done(client, replicate_id)["status"] == "error"
            for prediction_id in (seed_id, replicate_id):  # the receiver is down: tries fail, retries wait
                wait_for(lambda p=prediction_id: delivery_log(client, p)[0]["attempts"] >= 2, "no retry was logged")
        server.stop(stop_signal)
    finally:
        server.stop()
    restarted = Server(data, "--allow-private-urls", env=QUICK_RETRIES, port=server.port).start()
    receiver = None
    try:
        with restarted.client(key) as client:
            before = {p: delivery_log(client, p)[0]["attempts"] for p in (seed_id, replicate_id)}
            wait_for(lambda: all(delivery_log(client, p)[0]["attempts"] > before[p] for p in before),
                     "the restarted server did not resume the deliveries")  # fmt: skip
            receiver = Receiver(int(hook.rsplit(":", 1)[1].split("/")[0]))
            for prediction_id in (seed_id, replicate_id):
                wait_for(lambda p=prediction_id: delivery_log(client, p)[0]["state"] == "delivered", "not delivered")
            time.sleep(1.5)  # three retry periods: a second call would show up now
            seed_log, replicate_log = delivery_log(client, seed_id), delivery_log(client, replicate_id)
        seed_calls = receiver.about(f'"exec_id":"{seed_id}"'.encode())
        replicate_calls = receiver.about(f'"id":"{replicate_id}"'.encode())
    finally:
        restarted.stop()
        if receiver is not None:
            receiver.close()

    assert len(seed_calls) == 1 and len(replicate_calls) == 1  # exactly once
    (headers, body), (standard_headers, standard_body) = seed_calls[0], replicate_calls[0]
    assert verify(SECRET, headers["x-webhook-timestamp"], body, headers["x-webhook-signature"])
    assert json.loads(body)["status"] == "failed"
    replicate_client.webhooks.validate(headers=standard_headers, body=standard_body.decode(),
                                       secret=WebhookSigningSecret(key=standard_secret.key), tolerance=300)  # fmt: skip
    assert json.loads(standard_body)["status"] == "failed"

    for log, prediction_id in ((seed_log, seed_id), (replicate_log, replicate_id)):
        [delivery] = log
        assert delivery["url"] == hook and delivery["prediction_status"] == "error"
        assert delivery["state"] == "delivered" and delivery["delivered_at"] and delivery["next_attempt_at"] is None
        tries = delivery["tries"]
        assert delivery["attempts"] == len(tries) >= before[prediction_id] + 2  # before the stop, after it, success
        *failed, last = tries
        assert all(t["status_code"] is None and t["error"] for t in failed)  # nobody listened: no HTTP status
        assert any("refused" in t["error"] or "connect" in t["error"] for t in failed)
        assert last["status_code"] == 200 and last["error"] is None
        assert [t["at"] for t in tries] == sorted(t["at"] for t in tries)
    assert standard_headers["webhook-id"] == replicate_log[0]["id"]  # the same id on every try


def test_the_delivery_log_is_only_shown_to_the_owner(tmp_path):
    data = tmp_path / "data"
    alice, bob = make_key(data, "alice"), make_key(data, "bob")
    with Server(data, "--allow-private-urls", env=QUICK_RETRIES) as server, server.client(alice) as client:
        body = {"input": {"prompt": "x", "image_url": MISSING}, "webhook_url": f"http://127.0.0.1:{free_port()}/hook"}
        prediction_id = client.post("/v1/prediction", json=body).json()["predictionID"]
        assert wait_done(client, prediction_id)["status"] == "error"
        [delivery] = wait_for(lambda: delivery_log(client, prediction_id), "no delivery was stored")
        assert delivery["prediction_status"] == "error" and delivery["state"] in ("pending", "sending")
        with server.client(bob) as other:
            response = other.get(f"/v1/prediction/{prediction_id}/webhooks")
        assert response.status_code == 404 and "error" in response.json()
        assert client.get("/v1/prediction/nope/webhooks").status_code == 404
