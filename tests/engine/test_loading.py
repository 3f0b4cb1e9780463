import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.devices import GIB, pick_memory_mode
from fluxedit.engine.sources import SourceKind, classify_source
from fluxedit.engine.tiny import write_tiny_bfl_checkpoint
from fluxedit.schema import ModelUnavailable
from tests.helpers import settings


def test_loading_a_saved_folder_gives_the_same_edits(tiny_engine, tiny_folder, landscape):
    from_folder = Engine.load(model=str(tiny_folder), device="cpu")
    assert from_folder.model.source.kind is SourceKind.folder
    request = EditRequest(settings(), [landscape])
    ours = from_folder.generate(request).pixels
    reference = tiny_engine.generate(request).pixels
    # Same weights; only memory layout differs, which moves float rounding in the last bits.
    assert np.abs(ours - reference).max() < 1e-5


def test_loading_a_bfl_single_file_checkpoint(tiny_engine, tiny_folder, tmp_path, landscape):
    checkpoint = write_tiny_bfl_checkpoint(tmp_path / "flux1-kontext-dev.safetensors")
    engine = Engine.load(model=str(checkpoint), components=str(tiny_folder), device="cpu")
    assert engine.model.source.kind is SourceKind.single_file
    request = EditRequest(settings(), [landscape])
    ours = engine.generate(request).pixels
    reference = tiny_engine.generate(request).pixels
    assert np.abs(ours - reference).max() < 1e-5


def test_a_single_file_that_does_not_fit_the_components_is_refused(tiny_folder, tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelUnavailable, match="is not a FLUX transformer checkpoint"):
        Engine.load(model=str(bad), components=str(tiny_folder), device="cpu")


def test_sources_are_classified_or_explained(tmp_path, tiny_folder):
    assert classify_source("tiny").kind is SourceKind.tiny
    assert classify_source(str(tiny_folder)).kind is SourceKind.folder
    assert classify_source("black-forest-labs/FLUX.1-Kontext-dev").kind is SourceKind.hub
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ModelUnavailable, match="only safetensors checkpoints are loaded"):
        classify_source(str(pickle))
    with pytest.raises(ModelUnavailable, match="not a diffusers pipeline"):
        classify_source(str(tmp_path))
    with pytest.raises(ModelUnavailable, match="was not found"):
        classify_source(str(tmp_path / "missing" / "flux.safetensors"))


def _edit_with_hub(tmp_path, env_overrides: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env_overrides}
    env.pop("HF_TOKEN", None)
    env.update({k: v for k, v in env_overrides.items() if k == "HF_TOKEN"})
    script = (  # as `fluxedit edit` and each worker build theirs: from Settings, the one reader of HF_TOKEN
        "from fluxedit.config import Settings\n"
        "from fluxedit.engine import Engine\n"
        "from fluxedit.schema import ModelUnavailable\n"
        "config = Settings(model='black-forest-labs/FLUX.1-Kontext-dev').engine_config()\n"
        "try:\n    Engine.from_config(config)\n"
        "except ModelUnavailable as error:\n    print('UNAVAILABLE:', error)\n"
    )
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_hub_components_out_of_reach_name_the_components_fix(tmp_path):
    # A single-file transformer whose --components hub id cannot be reached: the fix is --components
    # (a local diffusers folder), not --model, which the user already points at a local file.
    checkpoint = write_tiny_bfl_checkpoint(tmp_path / "flux1-kontext-dev.safetensors")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    script = (
        "from fluxedit.engine import Engine\n"
        "from fluxedit.schema import ModelUnavailable\n"
        f"try:\n    Engine.load(model={str(checkpoint)!r}, components='black-forest-labs/FLUX.1-Kontext-dev')\n"
        "except ModelUnavailable as error:\n    print('UNAVAILABLE:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "UNAVAILABLE: black-forest-labs/FLUX.1-Kontext-dev is not in the local Hugging Face cache" in result.stdout
    assert "point --components at a local diffusers folder" in result.stdout
    assert "point --model" not in result.stdout


def test_offline_without_a_cached_copy_says_what_to_do(tmp_path):
    result = _edit_with_hub(tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert "UNAVAILABLE: black-forest-labs/FLUX.1-Kontext-dev is not in the local Hugging Face cache" in result.stdout
    assert "point --model at a local copy" in result.stdout


class FakeHub(BaseHTTPRequestHandler):
    """Answers every file request the way the hub answers for a gated repo without access."""

    def do_HEAD(self):
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model is restricted.")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def gated_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("token", [None, "hf_example"])
def test_gated_repo_says_accept_the_licence_and_set_a_token(tmp_path, gated_hub, token):
    env = {"HF_ENDPOINT": gated_hub, "HF_HUB_OFFLINE": "0"} | ({"HF_TOKEN": token} if token else {})
    result = _edit_with_hub(tmp_path, env)
    assert "UNAVAILABLE: black-forest-labs/FLUX.1-Kontext-dev is gated" in result.stdout, result.stderr[-2000:]
    assert "accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-Kontext-dev" in result.stdout
    assert ("check that HF_TOKEN belongs to that account" if token else "set HF_TOKEN") in result.stdout


@pytest.mark.parametrize(
    ("free_gib", "expected"),
    [
        (80, "gpu"),
        (40, "gpu"),
        (32, "model-offload"),
        (24, "group-offload"),
        (12, "group-offload"),
        (4, "sequential-offload"),
    ],
)
def test_memory_mode_table_for_the_real_model(free_gib, expected):
    # bf16 sizes of FLUX.1 Kontext [dev]: transformer 23.8, T5-XXL 9.5, CLIP-L 0.25, VAE 0.17 GB.
    total, largest = int(33.7e9), int(23.8e9)
    assert pick_memory_mode(free_gib * GIB, total, largest) == expected
