"""ComfyUI's fp8 transformer checkpoints (`--model flux1-kontext-dev-fp8*.safetensors --components <folder>`),
written here in ComfyUI's layout: BFL key names under `model.diffusion_model.`, float8_e4m3fn matrices, biases and
norm scales in bf16; the "fp8_scaled" file adds a per-tensor `scale_weight` (real weight = fp8 weight x scale),
unused `scale_input` keys and the `scaled_fp8` marker. Both load as fp8 and edit close to the float model."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.bfl_checkpoint import COMFY_PREFIX, diffusers_to_bfl
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from tests.helpers import pattern, settings

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
STEPS = 2
# Max pixel difference (pixels in [0, 1]) from the float32 model after 2 steps, measured on this tiny model:
# plain fp8 0.073, fp8_scaled 0.066 (loaded as fp8: torchao re-rounds each row to fp8), fp8_scaled upcast with
# --quantize none 0.068: the file's own fp8 rounding (3 mantissa bits) is what costs, on random weights that
# have no outliers to spare. The bound leaves about 2x room; a scale ignored or applied twice, or a wrong row
# split, moves pixels by far more.
TOLERANCE = 0.15


def write_comfyui_fp8(path: Path, scaled: bool) -> Path:
    state = diffusers_to_bfl(build_tiny_pipeline().transformer.state_dict())
    tensors = {}
    for name, tensor in state.items():
        key = COMFY_PREFIX + name
        if tensor.ndim != 2:
            tensors[key] = tensor.to(torch.bfloat16)
        elif not scaled:
            tensors[key] = tensor.to(FP8)
        else:
            stem = key.removesuffix(".weight")
            scale = tensor.abs().max().float() / FP8_MAX
            tensors[key] = (tensor / scale).to(FP8)
            tensors[stem + ".scale_weight"] = scale.reshape(())
            tensors[stem + ".scale_input"] = torch.ones(())
    if scaled:
        tensors[COMFY_PREFIX + "scaled_fp8"] = torch.empty(0, dtype=FP8)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def square():
    return DecodedImage(pattern(256, 256), OutputFormat.png)


def run(engine: Engine, image: DecodedImage) -> np.ndarray:
    fields = {"resolution_mode": "1:1", "num_inference_steps": STEPS, "seed": 3}
    return engine.generate(EditRequest(settings(**fields), [image])).pixels


@pytest.fixture(scope="module")
def reference(tiny_engine, square):
    return run(tiny_engine, square)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("comfyui")
    return {
        "plain": write_comfyui_fp8(folder / "flux1-kontext-dev-fp8-e4m3fn.safetensors", scaled=False),
        "scaled": write_comfyui_fp8(folder / "flux1-kontext-dev-fp8_scaled.safetensors", scaled=True),
    }


@pytest.mark.parametrize("kind", ["plain", "scaled"])
def test_an_fp8_checkpoint_loads_as_fp8_and_edits_close_to_the_float_model(files, tiny_folder, square, reference, kind):
    engine = Engine.load(model=str(files[kind]), components=str(tiny_folder), device="cpu")
    assert engine.model.source.kind == "single_file"
    assert engine.model.precision.transformer == "fp8"  # auto keeps an fp8 file fp8: no upcast copy
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert getattr(weight, "qdata", weight).dtype == FP8, type(weight)
    pixels = run(engine, square)
    error = float(np.abs(pixels - reference).max())
    assert 0 < error < TOLERANCE, error
    assert np.array_equal(run(engine, square), pixels)  # deterministic


def test_an_fp8_scaled_checkpoint_upcast_applies_its_scales(files, tiny_folder, square, reference):
    """--quantize none: the weights are the file's fp8 values times their scales, in the model dtype."""
    engine = Engine.load(model=str(files["scaled"]), components=str(tiny_folder), device="cpu", quantize="none")
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight) is torch.nn.Parameter and weight.dtype == torch.float32
    expected = build_tiny_pipeline().transformer.transformer_blocks[0].attn.to_q.weight
    assert torch.allclose(weight, expected, rtol=0.07, atol=1e-3)  # e4m3 keeps 3 mantissa bits: <= 1/16 relative
    error = float(np.abs(run(engine, square) - reference).max())
    assert 0 < error < TOLERANCE, error
