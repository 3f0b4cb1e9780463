"""The LoRA size limit (FLUXEDIT_LORA_MAX_BYTES) for uploads and URLs, and the download cache's size limit
(FLUXEDIT_LORA_CACHE_BYTES) pushing the least recently used download out, through a real server (docs/loras.md)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import torch

from tests import lora_builders as build
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

MAX_BYTES = 2**20  # 1 MB


class Host(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        self.hits.append(self.path)
        data = self.files.get(self.path, b"")
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-files")
    small = {name: build.write(build.diffusers_lora(seed=seed), folder / f"{name}.safetensors").read_bytes()
             for name, seed in (("a", 61), ("b", 62), ("kept", 64))}  # fmt: skip
    padded = build.diffusers_lora(seed=63) | {"padding.lora_A.weight": torch.zeros(300_000)}  # 1.2 MB
    large = build.write(padded, folder / "large.safetensors").read_bytes()
    assert len(large) > MAX_BYTES > 2 * max(len(data) for data in small.values())
    return {**small, "large": large}


@pytest.fixture(scope="module")
def host(loras):
    Host.files.update({f"/{name}.safetensors": data for name, data in loras.items()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory, loras):
    room_for_one = int(len(loras["a"]) * 1.5)
    env = {"FLUXEDIT_LORA_MAX_BYTES": str(MAX_BYTES), "FLUXEDIT_LORA_CACHE_BYTES": str(room_for_one)}
    data = tmp_path_factory.mktemp("lora-limits") / "data"
    with Server(data, "--allow-private-urls", env=env) as running, running.client() as http:
        yield http


@pytest.fixture(scope="module")
def photo(client):
    return upload(client, encoded(pattern(256, 256), "PNG"))["id"]


def edit_with(client, photo, url: str) -> dict:
    return wait_done(client, create(client, image_url=photo, num_inference_steps=1, loras=[{"path": url}]))


def test_an_upload_over_the_size_limit_is_refused_with_413(client, loras):
    refused = client.post("/v1/loras", files={"file": ("large.safetensors", loras["large"])}, data={"name": "big"})
    assert refused.status_code == 413 and "is larger than 1 MB" in refused.text
    fits = client.post("/v1/loras", files={"file": ("kept.safetensors", loras["kept"])}, data={"name": "fits"})
    assert fits.status_code == 201


def test_a_url_over_the_size_limit_fails_the_prediction_naming_the_limit(client, photo, host):
    failed = edit_with(client, photo, f"{host}/large.safetensors")
    assert failed["status"] == "error", failed
    assert "is larger than 1 MB" in failed["output"]["error_message"]


def test_the_download_cache_keeps_its_size_by_pushing_the_oldest_out(client, photo, host):
    first, second = f"{host}/a.safetensors", f"{host}/b.safetensors"
    assert edit_with(client, photo, first)["status"] == "success"
    assert edit_with(client, photo, first)["status"] == "success"
    assert Host.hits.count("/a.safetensors") == 1  # kept: the second edit used the cached copy
    assert edit_with(client, photo, second)["status"] == "success"  # room for one download: `a` goes (a
    # registered LoRA is never counted nor pushed out)
    assert edit_with(client, photo, first)["status"] == "success"
    assert Host.hits.count("/a.safetensors") == 2  # downloaded again
