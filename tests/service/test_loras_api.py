"""LoRAs through the API: registered by name, fetched by URL, read from allowed folders, refused clearly."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import torch

from tests import lora_builders as build
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done


class LoraHost(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        self.hits.append(self.path)
        data = self.files.get(self.path)
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    allowed = root / "allowed"
    allowed.mkdir()
    build.write(build.diffusers_lora(seed=41), allowed / "local.safetensors")
    build.write(build.diffusers_lora(seed=42), root / "outside.safetensors")
    return root


@pytest.fixture(scope="module")
def host(folders):
    LoraHost.files["/style.safetensors"] = build.write(build.bfl_layout_lora("diffusion_model.", seed=43),
                                                       folders / "style.safetensors").read_bytes()  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), LoraHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def server(folders):
    data = folders / "data"
    with Server(data, "--allow-private-urls", env={"FLUXEDIT_LORA_DIRS": f'["{folders / "allowed"}"]'}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def photo(client):
    return upload(client, encoded(pattern(512, 512), "PNG"))["id"]


def output_bytes(prediction: dict) -> bytes:
    assert prediction["status"] == "success", prediction["output"]
    return httpx.get(prediction["output"][0]).content


def edit(client, photo, loras=None, **extra):
    fields = {"image_url": photo, "seed": 5, "num_inference_steps": 2, **extra}
    if loras is not None:
        fields["loras"] = loras
    return wait_done(client, create(client, **fields))


def register(client, name: str, state: dict, tmp: Path) -> httpx.Response:
    path = build.write(state, tmp / f"{name}.safetensors")
    return client.post("/v1/loras", files={"file": (path.name, path.read_bytes())}, data={"name": name})


def test_a_registered_lora_changes_the_edit_and_scale_zero_does_not(client, photo, tmp_path):
    response = register(client, "watercolour", build.diffusers_lora(seed=40), tmp_path)
    assert response.status_code == 201 and response.json()["name"] == "watercolour"
    assert "watercolour" in [lora["name"] for lora in client.get("/v1/loras").json()["data"]]
    base = output_bytes(edit(client, photo))
    styled = output_bytes(edit(client, photo, [{"path": "watercolour", "scale": 1.0}]))
    zero = output_bytes(edit(client, photo, [{"path": "watercolour", "scale": 0.0}]))
    assert styled != base
    assert _pixels(zero) == _pixels(base)  # scale 0 is the base model (metadata differs: it names the LoRA)
    assert output_bytes(edit(client, photo)) == base  # and the base model again after it


def test_a_lora_from_a_url_is_downloaded_once(client, photo, host):
    url = f"{host}/style.safetensors"
    first = edit(client, photo, [{"path": url, "scale": 0.8}])
    second = edit(client, photo, [{"path": url, "scale": 0.8}], seed=6)
    assert first["status"] == second["status"] == "success"
    assert LoraHost.hits.count("/style.safetensors") == 1  # cached by content hash


def test_server_paths_only_inside_allowed_folders(client, photo, folders):
    inside = edit(client, photo, [{"path": str(folders / "allowed" / "local.safetensors")}])
    assert inside["status"] == "success"
    outside = edit(client, photo, [{"path": str(folders / "outside.safetensors")}])
    assert outside["status"] == "error"
    assert "only inside the LoRA folders" in outside["output"]["error_message"]


def test_a_lora_for_another_model_fails_clearly_and_leaves_the_base(client, photo, tmp_path):
    base = output_bytes(edit(client, photo))
    assert register(client, "sdxl-style", build.sdxl_lora(), tmp_path).status_code == 201
    failed = edit(client, photo, [{"path": "sdxl-style"}])
    assert failed["status"] == "error"
    assert failed["output"]["error_code"] == "INPUT_VALIDATION_ERROR"
    assert "input.loras.0.path" in failed["output"]["error_message"]
    assert output_bytes(edit(client, photo)) == base


def test_uploads_that_are_not_safetensors_loras_are_refused(client, tmp_path):
    pickled = tmp_path / "evil.safetensors"
    torch.save({"lora_A": torch.zeros(2)}, pickled)
    response = client.post("/v1/loras", files={"file": ("evil.safetensors", pickled.read_bytes())}, data={"name": "x"})
    assert response.status_code == 422 and "is not a safetensors file" in response.json()["error"]
    plain = build.write({"weight": torch.zeros(2)}, tmp_path / "plain.safetensors")
    response = client.post("/v1/loras", files={"file": ("p.safetensors", plain.read_bytes())}, data={"name": "y"})
    assert response.status_code == 422 and "holds no LoRA weights" in response.json()["error"]


def test_names_limits_and_deletion(client, photo, tmp_path):
    assert register(client, "temporary", build.diffusers_lora(seed=44), tmp_path).status_code == 201
    assert register(client, "temporary", build.diffusers_lora(seed=45), tmp_path).status_code == 409
    too_many = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo,
                                                              "loras": [{"path": "temporary"}] * 5}})  # fmt: skip
    assert too_many.status_code == 422 and "input.loras: must have at most 4 items" in too_many.json()["error"]
    assert client.delete("/v1/loras/temporary").status_code == 204
    gone = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo,
                                                          "loras": [{"path": "temporary"}]}})  # fmt: skip
    assert gone.status_code == 422 and "is not a LoRA name of yours" in gone.json()["error"]


def _pixels(data: bytes) -> bytes:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).tobytes()


def test_a_refused_name_leaves_no_kept_file_behind(client, server, folders):
    data = (folders / "allowed" / "local.safetensors").read_bytes()
    before = sorted(p.name for p in (server.data_dir / "loras").rglob("*") if p.is_file())
    for name in ("has spaces!", "-leading-dash"):
        response = client.post("/v1/loras", data={"name": name}, files={"file": ("style.safetensors", data)})
        assert response.status_code == 422 and response.json()["error"].startswith("name:"), response.text
    after = sorted(p.name for p in (server.data_dir / "loras").rglob("*") if p.is_file())
    assert after == before  # nothing stored for a name that was never going to be accepted
