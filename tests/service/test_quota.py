"""Storage quotas: a key past its quota gets 413, a full server 507, in each API dialect's error shape."""

import base64
import io
import zipfile

import pytest
import torch
from safetensors.torch import save

from tests.helpers import encoded, pattern
from tests.service.server import Server, upload, wait_done
from tests.service.test_keys_and_billing import make_key

KEY_QUOTA = 1_000_000
TOTAL_QUOTA = 1_000_000
REPLICATE_CREATE = "/v1/models/black-forest-labs/flux-kontext-dev/predictions"


def photo(seed: int) -> bytes:
    return encoded(pattern(640, 480, seed=seed), "PNG")  # about 650 KB: one fits in a quota, two do not


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def seed_create(client, image: str, **fields):
    body = {"model": "flux-kontext-dev", "input": {"prompt": "make it blue", "image_url": image, **fields}}
    return client.post("/v1/prediction", json=body)


def big_lora() -> bytes:
    return save({"transformer.blocks.0.attn.to_q.lora_A.weight": torch.zeros(100_000)})  # 400 KB


def pairs_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.writestr(f"p{i}_start.png", encoded(pattern(256, 256, seed=10 + i), "PNG"))
            archive.writestr(f"p{i}_end.png", encoded(pattern(256, 256, seed=20 + i), "PNG"))
    return buffer.getvalue()  # about 840 KB unpacked


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    data = tmp_path_factory.mktemp("quota") / "data"
    keys = {name: make_key(data, name) for name in ("alice", "bob", "dave")}
    with Server(data, env={"FLUXEDIT_KEY_STORAGE_QUOTA_BYTES": str(KEY_QUOTA)}) as server:
        yield server, keys


def test_a_key_past_its_quota_gets_413_naming_the_limit_in_every_dialect(keyed):
    server, keys = keyed
    with server.client(keys["alice"]) as alice, server.client(keys["bob"]) as bob:
        first = upload(alice, photo(1))
        refused = alice.post("/v1/files", files={"file": ("b.png", photo(2))})
        assert refused.status_code == 413
        message = refused.json()["error"]
        assert "this key's storage quota is full" in message and f"{KEY_QUOTA:,} bytes" in message
        assert upload(alice, photo(1))["id"] == first["id"]  # the same image again takes no more room

        seed = seed_create(alice, data_uri(photo(3)))
        assert seed.status_code == 413 and f"{KEY_QUOTA:,} bytes" in seed.json()["error"]
        replicate = alice.post(REPLICATE_CREATE, json={"input": {"prompt": "x", "input_image": data_uri(photo(4))}})
        assert replicate.status_code == 413
        assert replicate.json()["status"] == 413 and f"{KEY_QUOTA:,} bytes" in replicate.json()["detail"]
        openai = alice.post(
            "/v1/images/edits",
            files={"image": ("p.png", photo(5), "image/png")},
            data={"model": "flux-kontext-dev", "prompt": "x"},
        )
        assert openai.status_code == 413
        error = openai.json()["error"]
        assert error["code"] == "key_storage_quota_exceeded" and f"{KEY_QUOTA:,} bytes" in error["message"]

        lora = alice.post("/v1/loras", files={"file": ("big.safetensors", big_lora())}, data={"name": "big"})
        assert lora.status_code == 413 and f"{KEY_QUOTA:,} bytes" in lora.json()["error"]
        training = alice.post("/v1/trainings", files={"data": ("pairs.zip", pairs_zip())}, data={"steps": "1"})
        assert training.status_code == 413 and f"{KEY_QUOTA:,} bytes" in training.json()["error"]

        assert upload(bob, photo(2))["size"] > 0  # another key's quota is its own


def test_an_output_that_does_not_fit_fails_its_prediction_and_leaves_nothing(keyed):
    server, keys = keyed
    with server.client(keys["dave"]) as dave:
        small = upload(dave, encoded(pattern(256, 256), "PNG"))  # 140 KB in; a 1 MP PNG out is over 1 MB
        created = seed_create(dave, small["id"], num_inference_steps=1)
        assert created.status_code == 200, created.text
        failed = wait_done(dave, created.json()["predictionID"])
        assert failed["status"] == "error"
        assert failed["output"]["error_code"] == "STORAGE_QUOTA_EXCEEDED"
        assert "the output could not be stored" in failed["output"]["error_message"]
        assert f"{KEY_QUOTA:,} bytes" in failed["output"]["error_message"]
        assert upload(dave, photo(9))["size"] > 0  # 140 KB + 650 KB: no part of the output was kept


def test_a_full_server_answers_507_naming_its_limit_in_every_dialect(tmp_path):
    env = {"FLUXEDIT_STORAGE_QUOTA_BYTES": str(TOTAL_QUOTA)}
    with Server(tmp_path / "data", env=env) as server, server.client() as client:
        upload(client, photo(1))
        refused = client.post("/v1/files", files={"file": ("b.png", photo(2))})
        assert refused.status_code == 507
        message = refused.json()["error"]
        assert "the server's storage is full" in message and f"{TOTAL_QUOTA:,} bytes" in message
        replicate = client.post(REPLICATE_CREATE, json={"input": {"prompt": "x", "input_image": data_uri(photo(3))}})
        assert replicate.status_code == 507 and replicate.json()["title"] == "Insufficient Storage"
        openai = client.post(
            "/v1/images/edits",
            files={"image": ("p.png", photo(4), "image/png")},
            data={"model": "flux-kontext-dev", "prompt": "x"},
        )
        assert openai.status_code == 507
        assert openai.json()["error"]["code"] == "storage_quota_exceeded"
