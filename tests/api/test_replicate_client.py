"""The official `replicate` client, unmodified, against a real fluxedit server: only its base URL and token differ."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from tests.api.servers import Receiver, keyed_server
from tests.helpers import encoded, pattern

PHOTO = encoded(pattern(640, 480), "PNG")
MODEL = "black-forest-labs/flux-kontext-dev"
FAST = {"prompt": "make it blue", "num_inference_steps": 1}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    server, keys = keyed_server(tmp_path_factory.mktemp("replicate") / "data", "alice", "bob")
    with pytest.MonkeyPatch.context() as env:  # the two settings a Replicate user changes
        env.setenv("REPLICATE_BASE_URL", server.url)
        env.setenv("REPLICATE_API_TOKEN", keys["alice"])
        yield server, keys
    server.stop()


@pytest.fixture(scope="module")
def client(running) -> replicate.Client:
    return replicate.Client()  # from REPLICATE_BASE_URL and REPLICATE_API_TOKEN


@pytest.fixture(scope="module")
def alice(running) -> httpx.Client:
    """Plain HTTP with the client's key, for what the Replicate client does not show (the delivery log)."""
    server, keys = running
    with server.client(keys["alice"]) as http:
        yield http


@pytest.fixture(scope="module")
def receiver():
    receiving = Receiver()
    yield receiving
    receiving.close()


def opened(tmp_path, name="photo.png"):
    path = tmp_path / name
    path.write_bytes(PHOTO)
    return path.open("rb")


def fetch_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(httpx.get(url).content))


def failing(client: replicate.Client, receiver: Receiver) -> str:
    """A prediction that fails at once (its image URL answers 404): cheap, it never reaches the model."""
    missing = receiver.url.replace("/hook", "/missing.png")
    return client.predictions.create(model=MODEL, input={**FAST, "input_image": missing}).id


def test_run_with_an_open_file_uploads_it_and_returns_one_url(running, client, tmp_path):
    server, _ = running
    with opened(tmp_path) as photo:
        output = client.run(MODEL, input={**FAST, "input_image": photo, "aspect_ratio": "match_input_image",
                                          "output_format": "jpg", "output_quality": 80, "guidance": 3.0, "seed": 7,
                                          "go_fast": True, "disable_safety_checker": True})  # fmt: skip
    url = str(output)  # a str over http; the client wraps https URLs in a FileOutput whose str is the URL
    assert url.endswith(".jpg")
    picture = fetch_image(url)
    assert picture.format == "JPEG" and picture.size == (1184, 880)
    (latest,) = client.predictions.list().results[:1]
    assert latest.output == url and latest.status == "succeeded"
    assert latest.input["input_image"].startswith(f"{server.url}/v1/files/file_")  # where the client uploaded it
    assert {k: latest.input[k] for k in ("aspect_ratio", "output_format", "guidance", "seed", "go_fast")} == {
        "aspect_ratio": "match_input_image", "output_format": "jpg", "guidance": 3.0, "seed": 7, "go_fast": True,
    }  # fmt: skip
    assert latest.input["disable_safety_checker"] is True


def test_module_level_run_with_a_data_uri_and_an_aspect_ratio(running):
    data_uri = "data:image/png;base64," + base64.b64encode(PHOTO).decode()
    output = replicate.run(MODEL, input={**FAST, "input_image": data_uri, "aspect_ratio": "16:9",
                                         "output_format": "png"})  # fmt: skip
    picture = fetch_image(str(output))
    assert picture.format == "PNG" and picture.width > picture.height


def test_an_output_url_is_the_next_edits_input(client):
    first = client.run(MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO), "output_format": "webp"})
    second = client.run(MODEL, input={**FAST, "input_image": str(first), "aspect_ratio": "1:1"})
    assert fetch_image(str(second)).size == (1024, 1024)


def test_create_get_and_wait_give_replicate_prediction_objects(client):
    prediction = client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)})
    assert prediction.status == "starting" and prediction.model == MODEL and isinstance(prediction.version, str)
    assert prediction.urls["get"].endswith(f"/v1/predictions/{prediction.id}")
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.error is None
    fetched = client.predictions.get(prediction.id)
    assert fetched.output == prediction.output and isinstance(fetched.output, str)
    assert fetched.metrics["predict_time"] > 0 and "starting on" in fetched.logs
    assert fetched.created_at <= fetched.started_at <= fetched.completed_at
    assert set(fetched.urls) == {"get", "cancel"}


def test_prefer_wait_answers_with_the_finished_prediction(client):
    for wait in (True, 30):  # "Prefer: wait" and "Prefer: wait=30" (predictions.create(model=...) drops `wait`)
        prediction = client.models.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)},
                                                      wait=wait)  # fmt: skip
        assert prediction.status == "succeeded" and prediction.output.startswith("http")
    by_version = client.predictions.create(version=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)}, wait=30)
    assert by_version.status == "succeeded"


def test_get_with_wait_holds_the_answer_until_the_end(running, client):
    server, keys = running
    prediction = client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)})
    response = httpx.get(f"{server.url}/v1/predictions/{prediction.id}", params={"wait": 60},
                         headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=90)  # fmt: skip
    assert response.json()["status"] == "succeeded"


def test_cancel_a_running_and_a_queued_prediction(client, receiver, alice):
    slow = {**FAST, "input_image": io.BytesIO(PHOTO), "num_inference_steps": 50}
    running = client.predictions.create(model=MODEL, input=slow, webhook=receiver.url,
                                        webhook_events_filter=["completed"])  # fmt: skip
    queued = client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)})
    cancelled = client.predictions.cancel(queued.id)
    assert cancelled.status == "canceled" and cancelled.started_at is None
    deadline = time.monotonic() + 60
    while client.predictions.get(running.id).status == "starting" and time.monotonic() < deadline:
        time.sleep(0.1)
    running.cancel()
    running.wait()
    assert running.status == "canceled" and running.output is None
    ((_, body),) = receiver.calls_about(alice, running.id, 1)
    assert json.loads(body)["status"] == "canceled"  # "completed" includes a cancel


def test_listing_is_newest_first_with_cursor_pages(running, client, receiver):
    server, _ = running
    made = [failing(client, receiver) for _ in range(5)]
    everything = [p.id for page in replicate.paginate(client.predictions.list) for p in page]
    assert everything[:5] == made[::-1] and len(set(everything)) == len(everything)
    first = client.predictions.list(f"{server.url}/v1/predictions?limit=2")
    assert [p.id for p in first] == everything[:2] and first.next is not None and first.previous is None
    second = client.predictions.list(first.next)
    assert [p.id for p in second] == everything[2:4]
    created = [client.predictions.get(i).created_at for i in everything]
    assert created == sorted(created, reverse=True)


def test_a_failed_prediction_raises_model_error_with_our_message(client, receiver):
    missing = receiver.url.replace("/hook", "/missing.png")
    with pytest.raises(ModelError) as caught:
        client.run(MODEL, input={**FAST, "input_image": missing})
    prediction = caught.value.prediction
    assert prediction.status == "failed" and prediction.output is None
    assert str(caught.value) == prediction.error
    assert prediction.error.startswith("input.input_image: ") and "404" in prediction.error


@pytest.mark.parametrize(
    ("bad_input", "field"),
    [
        ({"num_inference_steps": 100}, "input.num_inference_steps: must be at most 50"),
        ({"aspect_ratio": "5:4"}, "input.aspect_ratio: must be match_input_image or one of"),
        ({"output_format": "gif"}, "input.output_format"),
        ({"go_fast": "yes"}, "input.go_fast: must be true or false"),
        ({"lora_weights": "not a lora"}, "input.lora_weights: "),
        ({"lora_weights": "not a lora", "lora_strength": 9}, "input.lora_strength: must be at most 4"),
        ({"prompt_strength": 0.5}, "input.prompt_strength: is not an input of black-forest-labs/flux-kontext-dev"),
        ({"strength": 1.5}, "input.strength: must be at most 1"),
        ({"output_resolution": "8k"}, "input.output_resolution: must be one of model, input"),
        ({"input_image": None}, "input.input_image: is required"),
    ],
)
def test_bad_input_raises_replicate_error_naming_the_field(client, bad_input, field):
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(model=MODEL, input={**FAST, "input_image": "file_doesnotexist0000", **bad_input})
    assert caught.value.status == 422 and caught.value.title == "Input validation failed"
    assert caught.value.detail.startswith(field)


def test_unknown_model_version_or_prediction_is_an_error(client):
    with pytest.raises(ReplicateError) as caught:
        client.run("black-forest-labs/flux-dev", input=FAST)
    assert caught.value.status == 404 and MODEL in caught.value.detail
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(version="0123abcd", input=FAST)
    assert caught.value.status == 422 and caught.value.detail.startswith("version: ")
    with pytest.raises(ReplicateError) as caught:
        client.predictions.get("doesnotexist")
    assert caught.value.status == 404


def test_a_bad_key_or_another_keys_prediction_is_refused(running, client, receiver):
    _, keys = running
    with pytest.raises(ReplicateError) as caught:
        replicate.Client(api_token="fxe_wrong").predictions.list()
    assert caught.value.status == 401 and caught.value.title == "Unauthenticated" and "not valid" in caught.value.detail
    alices = failing(client, receiver)
    with pytest.raises(ReplicateError) as caught:
        replicate.Client(api_token=keys["bob"]).predictions.get(alices)
    assert caught.value.status == 404


def test_webhooks_follow_the_filter_and_pass_the_clients_own_validator(running, client, receiver, alice):
    _, keys = running
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_") and client.webhooks.default.secret().key == secret.key
    assert replicate.Client(api_token=keys["bob"]).webhooks.default.secret().key != secret.key  # one per key
    photo = {**FAST, "input_image": io.BytesIO(PHOTO)}
    prediction = client.predictions.create(model=MODEL, input=photo, webhook=receiver.url,
                                           webhook_events_filter=["start", "completed"])  # fmt: skip
    calls = receiver.calls_about(alice, prediction.id, 2)
    assert sorted(json.loads(body)["status"] for _, body in calls) == ["starting", "succeeded"]
    for headers, body in calls:
        assert client.webhooks.validate(headers=headers, body=body.decode(), secret=secret, tolerance=300) is None
    start = next(json.loads(body) for _, body in calls if b'"starting"' in body)
    assert start["created_at"] is not None and start["started_at"] is None and start["output"] is None
    done = next(json.loads(body) for _, body in calls if b'"succeeded"' in body)
    assert done["output"] == client.predictions.get(prediction.id).output and done["model"] == MODEL
    headers, body = calls[0]
    with pytest.raises(InvalidSignatureError):
        client.webhooks.validate(headers=headers, body=body.decode().replace("make it", "make us"), secret=secret)
    with pytest.raises(InvalidSignatureError):
        client.webhooks.validate(headers=headers, body=body.decode(), secret=WebhookSigningSecret(key="whsec_AAAA"))


def test_default_webhook_events_are_output_and_completed_in_one_call(client, receiver, alice):
    prediction = client.models.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)},
                                                  webhook=receiver.url, wait=30)  # fmt: skip
    ((_, body),) = receiver.calls_about(alice, prediction.id, 1)
    assert json.loads(body)["status"] == "succeeded"


def test_the_logs_event_comes_with_each_change_that_logs(client, receiver, alice):
    prediction = client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)},
                                           webhook=receiver.url, webhook_events_filter=["logs"])  # fmt: skip
    calls = [json.loads(body) for _, body in receiver.calls_about(alice, prediction.id, 2)]
    assert sorted(call["status"] for call in calls) == ["starting", "succeeded"]  # "starting on ...", "done in ..."
    assert all(call["logs"] for call in calls)


def test_a_bad_webhook_filter_is_refused(client, receiver):
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO)},
                                  webhook=receiver.url, webhook_events_filter=["finished"])  # fmt: skip
    assert caught.value.status == 422 and caught.value.detail.startswith("webhook_events_filter: ")


def test_concurrent_runs_all_finish(client):
    outputs: list[str] = []

    def one(seed: int) -> None:
        outputs.append(str(client.run(MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO), "seed": seed})))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(set(outputs)) == 2


def corner_mask(width: int = 640, height: int = 480) -> bytes:
    """White (inpaint) on the top-left quarter, black (keep) elsewhere: Replicate's inpainting convention."""
    values = np.zeros((height, width), np.uint8)
    values[: height // 2, : width // 2] = 255
    return encoded(Image.fromarray(values, "L"), "PNG")


def test_a_mask_file_is_uploaded_and_reaches_the_edit(running, client, alice):
    server, _ = running
    mask = corner_mask()
    prediction = client.models.predictions.create(
        model=MODEL,
        input={**FAST, "input_image": io.BytesIO(PHOTO), "mask": io.BytesIO(mask), "strength": 0.7,
               "output_resolution": "input"},
        wait=60,
    )  # fmt: skip
    assert prediction.status == "succeeded", prediction.error
    assert prediction.input["mask"].startswith(f"{server.url}/v1/files/file_")  # where the client uploaded it
    assert prediction.input["strength"] == 0.7 and prediction.input["output_resolution"] == "input"
    assert alice.get(f"/v1/prediction/{prediction.id}").json()["input"]["mask_url"] == prediction.input["mask"]
    kept = Image.open(io.BytesIO(alice.get(prediction.input["mask"] + "/content").content))
    assert np.array_equal(np.asarray(kept.convert("L")), np.asarray(Image.open(io.BytesIO(mask))))


def test_a_mask_of_another_size_is_refused_naming_their_fields(client):
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(model=MODEL, input={**FAST, "input_image": io.BytesIO(PHOTO),
                                                      "mask": io.BytesIO(corner_mask(64, 64))})  # fmt: skip
    assert caught.value.status == 422
    assert caught.value.detail.startswith("input.mask: is 64x64 but the image to edit (input.input_image) is 640x480")
