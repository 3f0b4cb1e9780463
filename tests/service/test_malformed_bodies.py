"""Malformed request bodies, sent over HTTP to every create endpoint of every dialect: each is refused with a
4xx that names the field in the dialect's own error shape, never a 500 (which also resets the connection)."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import encoded, pattern
from tests.service.server import Server, upload

PHOTO = encoded(pattern(64, 64), "PNG")
REPLICATE_MODEL = "/v1/models/black-forest-labs/flux-kontext-dev/predictions"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("malformed") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    # One connection for the whole module: a 500 would reset it, and every later request would fail.
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def image(client) -> str:
    return upload(client, PHOTO)["id"]


def refused_field(response: httpx.Response) -> tuple[str | None, str]:
    """(the field the error names, its message) in the shape of the dialect that answered."""
    body = response.json()
    if "invalid_fields" in body:  # Replicate: problem details with the fields
        return body["invalid_fields"][0]["field"], body["detail"]
    if "detail" in body:  # Replicate, without fields (400, 404)
        return None, body["detail"]
    if isinstance(body.get("error"), dict):  # OpenAI
        return body["error"]["param"], body["error"]["message"]
    return None, body["error"]  # the seed's {"error": "field: problem"}


def assert_refused(response: httpx.Response, field: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    named, message = refused_field(response)
    assert message.startswith(f"{field}:"), message
    if named is not None:
        assert named == field, response.text


def _cancel(client: httpx.Client, response: httpx.Response) -> None:
    """A body that turned out valid made a prediction: it is cancelled at once, so the worker stays free."""
    body = response.json()
    prediction_id = body.get("predictionID") or body.get("id")
    if prediction_id:
        client.post(f"/v1/prediction/{prediction_id}/cancel")


# ---- the seed's POST /v1/prediction (and /run, which reads the same body) -----------------------------------

SEED_TOP = [
    ({"webhook_url": 123}, "webhook_url"),
    ({"webhook_url": ["https://example.com/hook"]}, "webhook_url"),
    ({"webhook_url": {"url": "https://example.com/hook"}}, "webhook_url"),
    ({"webhook_url": True}, "webhook_url"),
    ({"webhook_url": "not a url"}, "webhook_url"),
    ({"webhook_url": "data:text/plain;base64,aGk="}, "webhook_url"),  # not somewhere a webhook can go
    ({"webhook_url": "file_0123456789abcdef"}, "webhook_url"),
    ({"webhook_secret": 5}, "webhook_secret"),
    ({"webhook_secret": "s" * 5000}, "webhook_secret"),
    ({"version": {"id": "1.0"}}, "version"),
    ({"version": 1.0}, "version"),
    ({"version": "v" * 500}, "version"),
    ({"model": ["flux-kontext-dev"]}, "model"),
    ({"model": 7}, "model"),
    ({"input": "make it blue"}, "input"),
    ({"input": ["make it blue"]}, "input"),
    ({"input": None}, "input"),
]
SEED_INPUT = [
    ({"num_inference_steps": True}, "input.num_inference_steps"),
    ({"num_inference_steps": 2.5}, "input.num_inference_steps"),
    ({"num_inference_steps": "many"}, "input.num_inference_steps"),
    ({"guidance_scale": True}, "input.guidance_scale"),
    ({"seed": True}, "input.seed"),
    ({"seed": 2**64}, "input.seed"),
    ({"num_images": False}, "input.num_images"),
    ({"output_quality": True}, "input.output_quality"),
    ({"enable_safety_checker": 1}, "input.enable_safety_checker"),
    ({"write_metadata": 0}, "input.write_metadata"),
    ({"image_url": 5}, "input.image_url"),
    ({"image_url": {"url": "x"}}, "input.image_url"),
    ({"image_urls": "abc"}, "input.image_urls"),
    ({"image_urls": [5]}, "input.image_urls.0"),
    ({"loras": {"path": "x"}}, "input.loras"),
    ({"loras": [{"path": "x", "scale": True}]}, "input.loras.0.scale"),
    ({"loras": [{"path": "p" * 10000}]}, "input.loras.0.path"),
    ({"loras": ["style"]}, "input.loras.0"),
    ({"prompt": ["x"]}, "input.prompt"),
    ({"prompt": 5}, "input.prompt"),
    ({"output_format": 5}, "input.output_format"),
    ({"acceleration": 1}, "input.acceleration"),
    ({"resolution_mode": [1]}, "input.resolution_mode"),
    ({"surprise": 1}, "input.surprise"),
]
# Raw bodies: what json.loads itself chokes on, or what would recurse in every later step.
RAW = [
    b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError in json.loads
    b'{"input": {"prompt": "x", "deep": ' + b"[" * 100 + b"]" * 100 + b"}}",  # parses, but deeper than needed
    b'{"input": {"prompt": "x", "image_url": "IMAGE", "guidance_scale": NaN}}',
    b'{"input": {"prompt": "x", "image_url": "IMAGE", "seed": Infinity}}',
    b'[{"input": {}}]',
    b'"just a string"',
    b"\xff\xfe not utf-8",
    b"{not json",
]


def _seed_body(image: str, top: dict | None = None, fields: dict | None = None) -> dict:
    body = {"model": "flux-kontext-dev", "input": {"prompt": "make it blue", "image_url": image,
                                                   "num_inference_steps": 1, **(fields or {})}}  # fmt: skip
    body.update(top or {})
    return body


@pytest.mark.parametrize("path", ["/v1/prediction", "/v1/prediction/run"])
@pytest.mark.parametrize(("top", "field"), SEED_TOP)
def test_seed_top_level_fields_are_checked(client, image, path, top, field):
    assert_refused(client.post(path, json=_seed_body(image, top=top)), field)


@pytest.mark.parametrize(("fields", "field"), SEED_INPUT)
def test_seed_input_fields_are_checked_and_booleans_are_not_numbers(client, image, fields, field):
    assert_refused(client.post("/v1/prediction", json=_seed_body(image, fields=fields)), field)


@pytest.mark.parametrize("path", ["/v1/prediction", "/v1/predictions", REPLICATE_MODEL, "/v1/trainings"])
@pytest.mark.parametrize("raw", RAW, ids=range(len(RAW)))
def test_bodies_that_are_not_plain_json_objects_are_refused(client, image, path, raw):
    response = client.post(path, content=raw.replace(b"IMAGE", image.encode()),
                           headers={"content-type": "application/json"})  # fmt: skip
    assert_refused(response, "request body")


def test_the_stored_input_is_the_validated_one(client, image):
    fields = {"num_inference_steps": 1.0, "seed": "42", "guidance_scale": 3, "enable_safety_checker": "false"}
    response = client.post("/v1/prediction", json=_seed_body(image, fields=fields))
    assert response.status_code == 200, response.text
    prediction_id = response.json()["predictionID"]
    client.post(f"/v1/prediction/{prediction_id}/cancel")
    stored = client.get(f"/v1/prediction/{prediction_id}").json()["input"]
    assert stored == {"prompt": "make it blue", "image_url": image, "num_inference_steps": 1, "seed": 42,
                      "guidance_scale": 3.0, "enable_safety_checker": False}  # fmt: skip
    assert type(stored["num_inference_steps"]) is int and type(stored["guidance_scale"]) is float


# ---- Replicate's POST /v1/predictions and /v1/models/{owner}/{name}/predictions ------------------------------

REPLICATE_TOP = [
    ({"webhook": 123}, "webhook"),
    ({"webhook": "not a url"}, "webhook"),
    ({"webhook": "data:text/plain;base64,aGk="}, "webhook"),
    ({"webhook": "https://example.com/hook", "webhook_events_filter": "start"}, "webhook_events_filter"),
    ({"webhook": "https://example.com/hook", "webhook_events_filter": [{"event": "start"}]}, "webhook_events_filter"),
    ({"webhook": "https://example.com/hook", "webhook_events_filter": ["started"]}, "webhook_events_filter"),
    ({"input": "make it blue"}, "input"),
    ({"input": None}, "input"),
]
REPLICATE_INPUT = [
    ({"num_inference_steps": True}, "input.num_inference_steps"),
    ({"guidance": True}, "input.guidance"),
    ({"seed": False}, "input.seed"),
    ({"output_quality": True}, "input.output_quality"),
    ({"lora_weights": "style", "lora_strength": True}, "input.lora_strength"),
    ({"disable_safety_checker": 1}, "input.disable_safety_checker"),
    ({"go_fast": "yes"}, "input.go_fast"),
    ({"input_image": 5}, "input.input_image"),
    ({"aspect_ratio": ["1:1"]}, "input.aspect_ratio"),
    ({"output_format": 5}, "input.output_format"),
    ({"prompt": {"text": "x"}}, "input.prompt"),
    ({"surprise": 1}, "input.surprise"),
]


def _replicate_body(image: str, top: dict | None = None, fields: dict | None = None) -> dict:
    body = {"version": "1.0", "input": {"prompt": "make it blue", "input_image": image, "num_inference_steps": 1,
                                        **(fields or {})}}  # fmt: skip
    body.update(top or {})
    return body


@pytest.mark.parametrize("path", ["/v1/predictions", REPLICATE_MODEL])
@pytest.mark.parametrize(("top", "field"), REPLICATE_TOP)
def test_replicate_top_level_fields_are_checked(client, image, path, top, field):
    assert_refused(client.post(path, json=_replicate_body(image, top=top)), field)


@pytest.mark.parametrize("version", [{"id": "1.0"}, 1.0, ["1.0"], None, "sdxl"])
def test_replicate_version_is_checked(client, image, version):
    assert_refused(client.post("/v1/predictions", json=_replicate_body(image, top={"version": version})), "version")


@pytest.mark.parametrize(("fields", "field"), REPLICATE_INPUT)
def test_replicate_input_fields_are_checked_with_their_names(client, image, fields, field):
    assert_refused(client.post(REPLICATE_MODEL, json=_replicate_body(image, fields=fields)), field)


# ---- OpenAI's POST /v1/images/edits (multipart: every field arrives as text) ----------------------------------

OPENAI_FIELDS = [
    ({"n": "true"}, "n"),
    ({"n": "1.5"}, "n"),
    ({"seed": "true"}, "seed"),
    ({"num_inference_steps": "false"}, "num_inference_steps"),
    ({"guidance_scale": "nan"}, "guidance_scale"),
    ({"guidance_scale": "1e400"}, "guidance_scale"),
    ({"enable_safety_checker": "maybe"}, "enable_safety_checker"),
    ({"size": "big"}, "size"),
    ({"response_format": "xml"}, "response_format"),
    ({"output_format": "gif"}, "output_format"),
    ({"mask": "x"}, "mask"),
]


@pytest.mark.parametrize(("fields", "field"), OPENAI_FIELDS)
def test_openai_form_fields_are_checked(client, fields, field):
    form = {"prompt": "make it blue", "num_inference_steps": "1", **fields}
    assert_refused(client.post("/v1/images/edits", data=form, files={"image": ("photo.png", PHOTO)}), field)


def test_openai_text_where_a_file_belongs_and_the_reverse(client):
    assert_refused(client.post("/v1/images/edits", data={"prompt": "x", "image": "photo.png"}), "image")
    files = {"image": ("photo.png", PHOTO), "prompt": ("prompt.txt", b"make it blue")}
    assert_refused(client.post("/v1/images/edits", files=files), "prompt")


# ---- trainings, files, LoRAs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "https://example.com/pairs.zip"}, "input"),
        ({"input": ["https://example.com/pairs.zip"]}, "input"),
        ({"input": {"data": 5}}, "input.data"),
        ({"input": {"data": "https://example.com/pairs.zip", "steps": True}}, "input.steps"),
        ({"input": {"data": "https://example.com/pairs.zip", "rank": False}}, "input.rank"),
        ({"input": {"data": "https://example.com/pairs.zip", "alpha": "Infinity"}}, "input.alpha"),
        ({"input": {"data": "https://example.com/pairs.zip", "trigger_word": "w" * 1000}}, "input.trigger_word"),
    ],
)
def test_training_bodies_are_checked_before_any_download(client, body, field):
    assert_refused(client.post("/v1/trainings", json=body), field)


def test_training_form_fields_are_checked(client):
    response = client.post("/v1/trainings", data={"steps": "true"}, files={"data": ("pairs.zip", b"not a zip")})
    assert_refused(response, "input.steps")
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post("/v1/trainings", data={"steps": deep}, files={"data": ("pairs.zip", b"not a zip")})
    assert_refused(response, "input.steps")


def test_file_and_lora_uploads_name_the_missing_part(client):
    assert_refused(client.post("/v1/files", data={"file": "photo.png"}), "file")
    assert_refused(client.post("/v1/loras", data={"name": "style"}), "file")
    lora = {"file": ("style.safetensors", b"\0" * 16)}
    assert_refused(client.post("/v1/loras", data={"name": ""}, files=lora), "name")


def test_a_lora_whose_header_is_deeply_nested_json_is_refused(client):
    header = b"[" * 100_000 + b"]" * 100_000
    lora = {"file": ("style.safetensors", struct.pack("<Q", len(header)) + header)}
    assert_refused(client.post("/v1/loras", data={"name": "deep"}, files=lora), "file")


@pytest.mark.parametrize("path", ["/v1/prediction", "/v1/predictions"])
@pytest.mark.parametrize(
    "raw", ['[["2026-01-01", "x"]]', "[" * 9000 + "]" * 9000, "x" * 300], ids=["shape", "deep", "long"]
)
def test_a_cursor_that_is_not_ours_is_refused(client, path, raw):
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    response = client.get(path, params={"cursor": cursor})
    assert 400 <= response.status_code < 500, response.text
    assert "cursor" in response.text


# ---- property: any JSON value in any top-level or input field ------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SEED_FIELDS = ["model", "version", "input", "webhook_url", "webhook_secret"] + [
    f"input.{name}"
    for name in ("prompt", "image_url", "image_urls", "num_inference_steps", "guidance_scale", "seed", "num_images",
                 "output_format", "output_quality", "resolution_mode", "acceleration", "enable_safety_checker",
                 "loras", "write_metadata")
]  # fmt: skip
REPLICATE_FIELDS = ["version", "input", "webhook", "webhook_events_filter"] + [
    f"input.{name}"
    for name in ("prompt", "input_image", "aspect_ratio", "num_inference_steps", "guidance", "seed", "output_format",
                 "output_quality", "disable_safety_checker", "go_fast", "lora_weights", "lora_strength")
]  # fmt: skip
PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _with(body: dict, field: str, value) -> dict:
    body = json.loads(json.dumps(body))
    top, _, name = field.partition(".")
    if name:
        body["input"][name] = value
    else:
        body[top] = value
    return body


def _check_any_answer(client: httpx.Client, response: httpx.Response, field: str) -> None:
    assert response.status_code < 500, (field, response.status_code, response.text)
    if response.status_code < 300:
        _cancel(client, response)
        return
    named, message = refused_field(response)
    assert message.split(":")[0].startswith(field), message  # the field itself, or a part of it (input.loras.0)
    if named is not None:
        assert named.startswith(field), response.text


@PROPERTY
@given(field=st.sampled_from(SEED_FIELDS), value=JSON_VALUES)
def test_any_json_in_any_seed_field_is_never_a_500(client, image, field, value):
    response = client.post("/v1/prediction", json=_with(_seed_body(image), field, value))
    _check_any_answer(client, response, field)


@PROPERTY
@given(field=st.sampled_from(REPLICATE_FIELDS), value=JSON_VALUES)
def test_any_json_in_any_replicate_field_is_never_a_500(client, image, field, value):
    response = client.post("/v1/predictions", json=_with(_replicate_body(image), field, value))
    _check_any_answer(client, response, field)
