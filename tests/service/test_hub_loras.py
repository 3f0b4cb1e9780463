"""Hugging Face hub LoRA references (`owner/repo/file.safetensors`, or `owner/repo` with one such file) through a
real server, against a local fake of the hub's file API (HF_ENDPOINT): downloaded once, then used by content."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests import lora_builders as build
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(BaseHTTPRequestHandler):
    """`/{owner}/{repo}/resolve/{revision}/{file}` (HEAD and GET) and `/api/models/{owner}/{repo}/tree/...`."""

    repos: ClassVar[dict[str, dict[str, bytes]]] = {}
    downloads: ClassVar[list[str]] = []

    def _file(self) -> tuple[str, bytes] | None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            data = self.repos.get(repo, {}).get(name)
            return (f"{repo}/{name}", data) if data is not None else None
        return None

    def _headers_for(self, data: bytes) -> None:
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()

    def do_HEAD(self):
        found = self._file()
        if found is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers_for(found[1])

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            files = self.repos.get("/".join(parts[2:4]), {})
            body = json.dumps([{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                               for name, data in files.items()]).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        found = self._file()
        if found is None:
            self.do_HEAD()
            return
        self.downloads.append(found[0])
        self.send_response(200)
        self._headers_for(found[1])
        self.wfile.write(found[1])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub-files")
    style = build.write(build.diffusers_lora(seed=71), folder / "style.safetensors").read_bytes()
    other = build.write(build.diffusers_lora(seed=72), folder / "other.safetensors").read_bytes()
    FakeHub.repos.update({"someone/style": {"style.safetensors": style, "README.md": b"# a style"},
                          "someone/two": {"a.safetensors": style, "b.safetensors": other}})  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory, hub):
    root = tmp_path_factory.mktemp("hub-loras")
    env = {"HF_ENDPOINT": hub, "HF_HUB_OFFLINE": "0", "HF_HOME": str(root / "hf-home"), "HF_HUB_DISABLE_XET": "1"}
    with Server(root / "data", env=env) as running, running.client() as http:
        yield http


@pytest.fixture(scope="module")
def photo(client):
    return upload(client, encoded(pattern(256, 256), "PNG"))["id"]


def edit(client, photo, loras=None) -> dict:
    fields = {"image_url": photo, "num_inference_steps": 1, "seed": 3} | ({"loras": loras} if loras else {})
    return wait_done(client, create(client, **fields))


def test_a_hub_file_reference_is_downloaded_once_and_changes_the_edit(client, photo, hub):
    base = edit(client, photo)
    styled = edit(client, photo, [{"path": "someone/style/style.safetensors"}])
    assert styled["status"] == "success", styled
    assert client.get(styled["output"][0]).content != client.get(base["output"][0]).content
    again = edit(client, photo, [{"path": "someone/style/style.safetensors"}])
    assert again["status"] == "success"
    assert FakeHub.downloads.count("someone/style/style.safetensors") == 1  # the second edit used the kept copy


def test_a_repo_reference_takes_its_only_safetensors_file_and_a_repo_of_two_must_name_one(client, photo, hub):
    only = edit(client, photo, [{"path": "someone/style"}])
    assert only["status"] == "success", only
    ambiguous = edit(client, photo, [{"path": "someone/two"}])
    assert ambiguous["status"] == "error"
    assert "holds 2 .safetensors files: name one" in ambiguous["output"]["error_message"]
