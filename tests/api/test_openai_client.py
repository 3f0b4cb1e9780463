"""The official `openai` client's images.edit, unmodified, against a real fluxedit server: only base_url differs."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.api.servers import keyed_server
from tests.helpers import encoded, pattern

PHOTO = encoded(pattern(640, 480), "PNG")


def transparent_corner(width: int, height: int, hole: int = 2) -> bytes:
    """OpenAI's mask: opaque everywhere but the top-left 1/hole of each side, fully transparent (the part to edit)."""
    rgba = np.full((height, width, 4), 255, np.uint8)
    if hole:
        rgba[: height // hole, : width // hole, 3] = 0
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG")


STYLE = encoded(pattern(400, 400, seed=5), "JPEG")
FAST = {"num_inference_steps": 1}  # fluxedit's own parameters travel in extra_body


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    server, keys = keyed_server(tmp_path_factory.mktemp("openai") / "data", "alice")
    yield server, keys
    server.stop()


@pytest.fixture(scope="module")
def client(running) -> openai.OpenAI:
    server, keys = running
    return openai.OpenAI(api_key=keys["alice"], base_url=f"{server.url}/v1")


def test_edit_answers_b64_json_by_default(client, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(PHOTO)
    with path.open("rb") as photo:
        result = client.images.edit(model="flux-kontext-dev", image=photo, prompt="make it blue",
                                    extra_body={**FAST, "seed": 3})  # fmt: skip
    (image,) = result.data
    picture = Image.open(io.BytesIO(base64.b64decode(image.b64_json)))
    assert picture.format == "PNG" and picture.size == (1184, 880)  # the input's format and nearest Kontext size
    assert result.size == "1184x880" and result.output_format == "png" and result.created <= time.time()


def test_several_images_n_size_urls_and_output_format(client):
    result = client.images.edit(
        model="flux-kontext-dev",
        image=[("photo.png", PHOTO, "image/png"), ("style.jpg", STYLE, "image/jpeg")],  # the second is a reference
        prompt="paint it in the style of the second image",
        n=2,
        size="1536x1024",
        response_format="url",
        output_format="webp",
        output_compression=70,
        extra_body=FAST,
    )
    assert len(result.data) == 2 and result.output_format == "webp" and result.size == "1248x832"  # 3:2 at ~1 MP
    for image in result.data:
        picture = Image.open(io.BytesIO(httpx.get(image.url).content))
        assert picture.format == "WEBP" and picture.size == (1248, 832)


def test_a_bad_key_raises_authentication_error(running):
    server, _ = running
    wrong = openai.OpenAI(api_key="fxe_wrong", base_url=f"{server.url}/v1")
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.images.edit(model="flux-kontext-dev", image=("photo.png", PHOTO, "image/png"), prompt="x")
    assert caught.value.code == "invalid_api_key" and "not valid" in caught.value.message


@pytest.mark.parametrize(
    ("bad", "param", "message"),
    [
        ({"n": 5}, "n", "n: must be at most 4"),
        ({"size": "1792x1024"}, "size", "size: must be auto or WIDTHxHEIGHT with one of the aspect ratios"),
        ({"output_format": "gif"}, "output_format", "output_format: "),
        ({"response_format": "png"}, "response_format", "response_format: must be b64_json or url"),
        ({"quality": "high"}, "quality", "quality: must be auto"),
        ({"mask": ("mask.png", PHOTO, "image/png")}, "mask", "mask: has no alpha channel: OpenAI's rule is a PNG"),
        (
            {"mask": ("mask.png", transparent_corner(64, 64), "image/png")},
            "mask",
            "mask: is 64x64 but the image to edit (image) is 640x480",
        ),
        (
            {"mask": ("mask.png", transparent_corner(640, 480, hole=0), "image/png")},
            "mask",
            "mask: marks nothing to edit (no pixel is transparent)",
        ),
        ({"extra_body": {"strength": 2}}, "strength", "strength: must be at most 1"),
        ({"extra_body": {"num_inference_steps": 0}}, "num_inference_steps", "num_inference_steps: must be at least 1"),
        ({"image": ("notes.txt", b"not an image", "text/plain")}, "image", "image: "),
        ({"image": [("p.png", PHOTO, "image/png")] * 5}, "image", "image: at most 4 images"),
    ],
)
def test_bad_input_raises_bad_request_naming_the_parameter(client, bad, param, message):
    arguments = {"model": "flux-kontext-dev", "image": ("photo.png", PHOTO, "image/png"), "prompt": "x", **bad}
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(**arguments)
    assert caught.value.param == param and caught.value.type == "invalid_request_error"
    assert caught.value.body["message"].startswith(message)


def test_another_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.edit(model="gpt-image-1", image=("photo.png", PHOTO, "image/png"), prompt="x")
    assert caught.value.code == "model_not_found" and "flux-kontext-dev" in caught.value.message


def test_an_edit_cancelled_meanwhile_is_an_error(running, client):
    server, keys = running
    caught: list[Exception] = []

    def edit() -> None:
        try:
            client.images.edit(model="flux-kontext-dev", image=("photo.png", PHOTO, "image/png"), prompt="x",
                               extra_body={"num_inference_steps": 50})  # fmt: skip
        except openai.APIStatusError as error:
            caught.append(error)

    thread = threading.Thread(target=edit)
    thread.start()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys['alice']}"}) as seed:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the edit is an ordinary prediction: find it and cancel it
            latest = seed.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
            if latest["input"]["num_inference_steps"] == 50 and latest["status"] == "processing":
                break
            time.sleep(0.05)
        seed.post(f"/v1/prediction/{latest['id']}/cancel")
    thread.join(60)
    (error,) = caught
    assert isinstance(error, openai.BadRequestError) and error.code == "cancelled"
    assert latest["id"] in error.message


def test_a_mask_edits_its_transparent_part_in_our_form(running, client):
    server, keys = running
    result = client.images.edit(model="flux-kontext-dev", image=("photo.png", PHOTO, "image/png"),
                                mask=("mask.png", transparent_corner(640, 480), "image/png"), prompt="a red hat",
                                extra_body={**FAST, "strength": 0.8, "output_resolution": "input"})  # fmt: skip
    (image,) = result.data
    assert Image.open(io.BytesIO(base64.b64decode(image.b64_json))).format == "PNG"
    with server.client(keys["alice"]) as seed:  # the edit is an ordinary prediction: what it was given
        latest = seed.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
        assert latest["input"]["strength"] == 0.8 and latest["input"]["output_resolution"] == "input"
        stored = Image.open(io.BytesIO(seed.get(f"/v1/files/{latest['input']['mask_url']}/content").content))
    expected = np.zeros((480, 640), np.uint8)
    expected[:240, :320] = 255  # transparent (OpenAI: edit) is white (ours: may change)
    assert stored.mode == "L" and np.array_equal(np.asarray(stored), expected)
