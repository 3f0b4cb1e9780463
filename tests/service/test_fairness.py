"""Keys take turns at the workers; per-key queue and rate limits answer 429 with Retry-After in every dialect."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from fluxedit import Client
from fluxedit.service.admission import RateLimiter
from fluxedit.service.fairness import KeyTurns
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done
from tests.service.test_keys_and_billing import make_key

PHOTO = encoded(pattern(640, 480), "PNG")
SMALL_URI = "data:image/png;base64," + base64.b64encode(encoded(pattern(64, 48), "PNG")).decode()
PER_KEY, TOTAL = 6, 8  # queue limits of the `queues` server


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def wait_for_status(client, prediction_id: str, wanted: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/v1/prediction/{prediction_id}").json()["status"] in wanted:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{prediction_id} never reached {wanted}")


@pytest.fixture(scope="module")
def queues(tmp_path_factory):
    data = tmp_path_factory.mktemp("fair") / "data"
    keys = {name: make_key(data, name) for name in ("heavy", "light", "busy", "c", "d")}
    env = {"FLUXEDIT_MAX_QUEUE": str(TOTAL), "FLUXEDIT_MAX_QUEUE_PER_KEY": str(PER_KEY), "FLUXEDIT_RATE_LIMIT": "0",
           "FLUXEDIT_BATCH_MAX": "2"}  # fmt: skip
    with Server(data, "--workers", "1", env=env) as server:
        yield server, keys


def test_a_key_with_a_long_queue_does_not_hold_back_another_key(queues):
    server, keys = queues
    with server.client(keys["heavy"]) as heavy, server.client(keys["light"]) as light:
        heavy_photo, light_photo = upload(heavy, PHOTO)["id"], upload(light, PHOTO)["id"]
        heavy_ids = [create(heavy, image_url=heavy_photo, num_inference_steps=1, seed=i) for i in range(PER_KEY)]
        light_id = create(light, image_url=light_photo, num_inference_steps=2)  # other settings: it runs alone
        light_done = wait_done(light, light_id)
        for prediction_id in heavy_ids:  # what has not started yet would start after the light one: not needed
            heavy.post(f"/v1/prediction/{prediction_id}/cancel")
        heavy_ended = [wait_done(heavy, p) for p in heavy_ids]
    assert light_done["status"] == "success"
    light_start = moment(light_done["started_at"])
    ahead = [p for p in heavy_ended if p["started_at"] and moment(p["started_at"]) < light_start]
    # One heavy prediction was running when the light key's arrived; the light one goes next (oldest-first
    # would have run all six heavy ones first).
    assert 1 <= len(ahead) <= 2, [(p["status"], p["started_at"]) for p in heavy_ended]


def test_a_batch_is_shared_between_keys_rather_than_filled_by_the_oldest_key(queues):
    server, keys = queues
    with server.client(keys["busy"]) as busy, server.client(keys["heavy"]) as heavy, \
            server.client(keys["light"]) as light:  # fmt: skip
        long_one = create(busy, image_url=SMALL_URI, num_inference_steps=50, num_images=4)  # holds the worker
        wait_for_status(busy, long_one, {"processing"})
        heavy_photo, light_photo = upload(heavy, PHOTO)["id"], upload(light, PHOTO)["id"]
        heavy_ids = [create(heavy, image_url=heavy_photo, num_inference_steps=1, seed=i) for i in range(PER_KEY)]
        light_id = create(light, image_url=light_photo, num_inference_steps=1)  # the same size and settings
        busy.post(f"/v1/prediction/{long_one}/cancel")
        light_done = wait_done(light, light_id)
        for prediction_id in heavy_ids:
            heavy.post(f"/v1/prediction/{prediction_id}/cancel")
        heavy_ended = [wait_done(heavy, p) for p in heavy_ids]
    # The first batch after the long one holds the light key's prediction and a heavy one (the two oldest
    # would have been heavy ones).
    assert light_done["status"] == "success" and "in a batch of 2" in light_done["logs"]
    together = [p for p in heavy_ended if p["started_at"] == light_done["started_at"]]
    assert len(together) == 1 and together[0]["status"] == "success"


def test_per_key_and_total_queue_limits_hold_under_concurrent_creates(queues):
    server, keys = queues
    with server.client(keys["busy"]) as busy, server.client(keys["c"]) as c, server.client(keys["d"]) as d:
        long_one = create(busy, image_url=SMALL_URI, num_inference_steps=50, num_images=4)  # holds the worker
        wait_for_status(busy, long_one, {"processing"})
        body = {"model": "flux-kontext-dev", "input": {"prompt": "x", "image_url": SMALL_URI, "num_inference_steps": 1}}
        with ThreadPoolExecutor(10) as pool:
            from_c = list(pool.map(lambda _: c.post("/v1/prediction", json=body), range(10)))
            from_d = list(pool.map(lambda _: d.post("/v1/prediction", json=body), range(10)))
        try:
            admitted_c = [r.json()["predictionID"] for r in from_c if r.status_code == 200]
            admitted_d = [r.json()["predictionID"] for r in from_d if r.status_code == 200]
            assert len(admitted_c) == PER_KEY, [r.text for r in from_c]
            assert len(admitted_d) == TOTAL - PER_KEY, [r.text for r in from_d]
            for refused, message in ((from_c, f"at most {PER_KEY} per key"), (from_d, f"at most {TOTAL})")):
                refused = [r for r in refused if r.status_code != 200]
                assert all(r.status_code == 429 and message in r.json()["error"] for r in refused), refused[0].text
                assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        finally:
            for client, responses in ((c, from_c), (d, from_d)):
                for response in responses:
                    if response.status_code == 200:
                        client.post(f"/v1/prediction/{response.json()['predictionID']}/cancel")
            busy.post(f"/v1/prediction/{long_one}/cancel")
        assert wait_done(busy, long_one)["status"] == "cancelled"


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    data = tmp_path_factory.mktemp("rate") / "data"
    keys = {name: make_key(data, name) for name in ("caller", "other", "sdk")}
    env = {"FLUXEDIT_RATE_LIMIT": "12", "FLUXEDIT_RATE_LIMIT_BURST": "1"}  # one create now, then one every 5 s
    with Server(data, env=env) as server:
        yield server, keys


def test_the_rate_limit_is_per_key_and_answers_429_with_retry_after_in_every_dialect(rated):
    server, keys = rated
    with server.client(keys["caller"]) as client:
        photo = upload(client, PHOTO)["id"]
        first = create(client, image_url=photo, num_inference_steps=1)
        seed = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo}})
        replicate = client.post(
            "/v1/models/black-forest-labs/flux-kontext-dev/predictions", json={"input": {"prompt": "x",
                                                                                     "input_image": photo}}
        )  # fmt: skip
        stored_before = sorted((server.data_dir / "files").rglob("file_*"))
        unseen = encoded(pattern(96, 64, seed=42), "PNG")  # not stored yet: storing it would show on disk
        openai = client.post("/v1/images/edits", files={"image": ("a.png", unseen)}, data={"prompt": "x"})
        assert sorted((server.data_dir / "files").rglob("file_*")) == stored_before  # refused before storing
        for response in (seed, replicate, openai):
            assert response.status_code == 429, response.text
            assert 1 <= int(response.headers["retry-after"]) <= 5
        assert "at most 12 predictions a minute per key" in seed.json()["error"]
        assert replicate.json()["status"] == 429 and "at most 12" in replicate.json()["detail"]
        assert openai.json()["error"]["code"] == "rate_limit_exceeded"
        client.post(f"/v1/prediction/{first}/cancel")
    with server.client(keys["other"]) as other:  # another key has its own allowance
        admitted = create(other, image_url=upload(other, PHOTO)["id"], num_inference_steps=1)
        other.post(f"/v1/prediction/{admitted}/cancel")


def test_the_python_client_waits_out_retry_after(rated):
    server, keys = rated
    with server.client(keys["sdk"]) as raw, Client(server.url, api_key=keys["sdk"], timeout=60) as sdk:
        photo = upload(raw, PHOTO)["id"]
        first = create(raw, image_url=photo, num_inference_steps=1)  # the key's one token: the next waits 5 s
        created = sdk.create(photo, "make it blue", num_inference_steps=1)  # refused first, then sent again
        assert created["status"] in ("created", "starting", "processing")
        for prediction_id in (first, created["id"]):
            sdk.cancel(prediction_id)


def test_keys_take_turns_least_recently_served_first():
    turns = KeyTurns()
    t = [datetime(2025, 1, 1, 0, 0, s) for s in range(4)]
    assert turns.next_key({"a": t[0], "b": t[1]}) == "a"  # none served yet: the oldest waiting work
    turns.served("a")
    assert turns.next_key({"a": t[0], "b": t[1], None: t[2]}) == "b"
    turns.served("b")
    assert turns.next_key({"a": t[0], "b": t[1], None: t[2]}) is None  # the keyless caller is a key too
    turns.served(None)
    assert turns.next_key({"a": t[0], "b": t[1], None: t[2]}) == "a"


def test_the_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    assert bucket.take("k") == 0 and bucket.take("k") == 0
    assert bucket.take("k") == pytest.approx(10.0)  # one token every 10 s
    assert bucket.take("other") == 0
    now[0] = 5.0
    assert bucket.take("k") == pytest.approx(5.0)  # a refused try takes nothing
    now[0] = 10.0
    assert bucket.take("k") == 0
    now[0] = 1000.0
    assert [bucket.take("k") > 0 for _ in range(3)] == [False, False, True]  # never more than the burst
