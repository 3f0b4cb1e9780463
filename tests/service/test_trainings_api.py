"""Trainings through the API: train between predictions, then edit with the new LoRA by name."""

import io
import time
import zipfile

import httpx
import pytest
from PIL import ImageOps
from safetensors.torch import load

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

FIELDS = {"steps": "20", "resolution": "256", "rank": "8", "learning_rate": "0.003", "targets": "all",
          "default_caption": "invert the colours", "seed": "1"}  # fmt: skip


def pairs_zip(count: int = 3, drop_end_of: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            picture = pattern(128, 128, seed=i)
            archive.writestr(f"pairs/p{i}_start.png", encoded(picture, "PNG"))
            if i != drop_end_of:
                archive.writestr(f"pairs/p{i}_end.png", encoded(ImageOps.invert(picture), "PNG"))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"FLUXEDIT_TRAINING_SLICE_STEPS": "5"}
    with Server(tmp_path_factory.mktemp("trainings") / "data", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


def start_training(client, name: str, **overrides) -> dict:
    fields = {**FIELDS, "name": name, **overrides}
    response = client.post("/v1/trainings", files={"data": ("pairs.zip", pairs_zip())}, data=fields)
    assert response.status_code == 201, response.text
    return response.json()


def wait_training(client, training_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        training = client.get(f"/v1/trainings/{training_id}", params={"wait": 30}).json()
        if training["status"] in ("success", "error", "cancelled"):
            return training
    raise TimeoutError(training_id)


def test_train_between_predictions_then_edit_with_the_lora_by_name(client):
    photo = upload(client, encoded(pattern(256, 256, seed=7), "PNG"))["id"]
    training = start_training(client, "inverter")
    assert training["status"] in ("created", "processing") and training["progress"]["total"] == 20
    prediction = wait_done(client, create(client, image_url=photo, num_inference_steps=2, seed=4))
    assert prediction["status"] == "success"  # it ran while the training was going on
    done = wait_training(client, training["id"])
    assert done["status"] == "success", done["logs"]
    assert done["progress"]["step"] == 20 and len(done["losses"]) == 20
    assert done["completed_at"] > prediction["completed_at"]
    assert done["lora"]["name"] == "inverter"
    for layout, prefix in (("diffusers", "transformer."), ("comfyui", "diffusion_model.")):
        data = client.get(done["lora"]["urls"][layout]).content
        assert all(key.startswith(prefix) for key in load(data))
    styled = wait_done(client, create(client, image_url=photo, num_inference_steps=2, seed=4,
                                      loras=[{"path": "inverter", "scale": 1.0}]))  # fmt: skip
    assert styled["status"] == "success"
    assert httpx.get(styled["output"][0]).content != httpx.get(prediction["output"][0]).content
    assert "inverter" in [lora["name"] for lora in client.get("/v1/loras").json()["data"]]


def test_data_problems_are_refused_at_once(client):
    response = client.post("/v1/trainings", files={"data": ("pairs.zip", pairs_zip(drop_end_of=1))},
                           data={**FIELDS, "default_caption": ""})  # fmt: skip
    assert response.status_code == 422
    message = response.json()["error"]
    assert message.startswith("data: ") and "p1_start.png: its pair p1_end.* is missing" in message
    assert "no caption" in message
    response = client.post("/v1/trainings", files={"data": ("pairs.zip", pairs_zip())}, data={**FIELDS, "rank": "0"})
    assert response.status_code == 422 and "input.rank: must be at least 1" in response.json()["error"]


def test_cancel_a_training(client):
    training = start_training(client, "to-cancel", steps="400")
    cancelled = client.post(f"/v1/trainings/{training['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.get(f"/v1/trainings/{training['id']}/lora").status_code == 409
    listed = {t["id"]: t["status"] for t in client.get("/v1/trainings").json()["data"]}
    assert listed[training["id"]] == "cancelled"


def _damaged_zip() -> bytes:
    """A zip whose first member's deflate stream is garbage (the headers and sizes are intact)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pairs/p0_start.png", bytes(range(256)) * 64)
        archive.writestr("pairs/p0_end.png", bytes(range(256)) * 64)
    data = bytearray(buffer.getvalue())
    start = 30 + len("pairs/p0_start.png")  # the first member's local header, then its compressed bytes
    data[start : start + 40] = b"\xff" * 40
    return bytes(data)


def _caption_not_utf8() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(2):
            picture = pattern(128, 128, seed=i)
            archive.writestr(f"pairs/p{i}_start.png", encoded(picture, "PNG"))
            archive.writestr(f"pairs/p{i}_end.png", encoded(ImageOps.invert(picture), "PNG"))
            archive.writestr(f"pairs/p{i}.txt", b"caf\xe9 \xff\xfe")  # Latin-1, not UTF-8
    return buffer.getvalue()


def _many_members() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(20_001):
            archive.writestr(f"pairs/n{i}.txt", b"")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (_damaged_zip(), "the zip is damaged"),
        (_caption_not_utf8(), "a caption file is not UTF-8 text"),
        (_many_members(), "holds 20,001 files, at most 20,000"),
    ],
    ids=["damaged-deflate", "caption-not-utf8", "too-many-members"],
)
def test_an_unreadable_zip_is_a_clear_422_not_a_500(client, data, said):
    response = client.post("/v1/trainings", files={"data": ("pairs.zip", data)}, data={**FIELDS, "name": "bad"})
    assert response.status_code == 422, response.text
    assert said in response.json()["error"] and "data" in response.json()["error"]
