"""The engine on a CUDA GPU: bf16 placement, the memory modes, T5 kept on the CPU, fp8 and compile for `high`,
no recompilation across LoRA switches and Kontext sizes,
and out-of-memory surfacing as the error the worker recognises. Every test here asks for CUDA explicitly and is
skipped, with its reason, where there is none (the rest of the suite runs the tiny model on the CPU)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fluxedit.engine import Engine
from fluxedit.engine.engine import EditRequest
from fluxedit.engine.fast_paths import FP8_MIN_CAPABILITY
from tests.helpers import settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


@pytest.fixture(scope="module")
def gpu_engine():
    engine = Engine.load(model="tiny", device="cuda", memory_mode="gpu")
    yield engine
    del engine
    torch.cuda.empty_cache()


def pixels(engine: Engine, picture, **overrides) -> np.ndarray:
    return engine.generate(EditRequest(settings(**overrides), [picture])).pixels


def test_the_tiny_model_runs_on_the_gpu_in_bf16(gpu_engine, landscape):
    placement = gpu_engine.model.placement
    assert placement.device.type == "cuda" and placement.dtype == torch.bfloat16 and placement.memory_mode == "gpu"
    assert next(gpu_engine.model.pipe.transformer.parameters()).device.type == "cuda"
    result = gpu_engine.edit(EditRequest(settings(), [landscape]))
    assert (result.width, result.height) == (1184, 880) and result.transformer_passes == 2
    first, again = pixels(gpu_engine, landscape), pixels(gpu_engine, landscape)
    assert np.isfinite(first).all() and np.array_equal(first, again)  # a fixed seed is repeatable on CUDA too


@pytest.mark.parametrize("mode", ["model-offload", "group-offload", "sequential-offload"])
def test_each_offload_mode_makes_the_image_the_gpu_mode_makes(gpu_engine, landscape, mode):
    offloaded = Engine.load(model="tiny", device="cuda", memory_mode=mode)
    try:
        assert offloaded.model.placement.memory_mode == mode
        picture = pixels(offloaded, landscape)
    finally:
        del offloaded
        torch.cuda.empty_cache()
    reference = pixels(gpu_engine, landscape)
    # The same bf16 computation, its weights moved in at use: equal up to the kernels' order of summation.
    assert np.abs(picture.astype(np.float32) - reference.astype(np.float32)).mean() < 0.02 * max(reference.max(), 1)


def test_text_encoder_on_the_cpu_leaves_the_rest_on_the_gpu(landscape):
    engine = Engine.load(model="tiny", device="cuda", memory_mode="gpu", text_encoder_device="cpu")
    try:
        pipe = engine.model.pipe
        assert next(pipe.text_encoder_2.parameters()).device.type == "cpu"
        assert next(pipe.transformer.parameters()).device.type == "cuda"
        assert np.isfinite(pixels(engine, landscape)).all()
    finally:
        del engine
        torch.cuda.empty_cache()


def test_high_uses_fp8_on_a_capable_gpu(landscape):
    """fp8 is a load-time choice (--quantize fp8): `high` runs that one loaded fp8 transformer, never a copy."""
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        pytest.skip(f"fp8 needs compute capability {FP8_MIN_CAPABILITY} or more (this GPU: {capability})")
    if importlib.util.find_spec("torchao") is None:
        pytest.skip("fp8 needs torchao, not installed here")
    engine = Engine.load(model="tiny", device="cuda", memory_mode="gpu", quantize="fp8")
    try:
        assert engine.model.precision.transformer == "fp8"
        weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
        assert getattr(weight, "qdata", weight).dtype == torch.float8_e4m3fn, type(weight)
        result = engine.edit(EditRequest(settings(acceleration="high"), [landscape]))
        assert result.acceleration == "high"
        assert not any("not fp8" in line for line in result.logs), result.logs
        model, notes = engine.fast.get()
        assert model is engine.pipe.transformer, notes  # the loaded fp8 transformer itself: no second copy
        held = [value for value in vars(engine.fast).values() if isinstance(value, torch.nn.Module)]
        assert held == [engine.pipe.transformer]
    finally:
        del engine
        torch.cuda.empty_cache()


def test_high_compiles_and_says_nothing_fell_back(gpu_engine, landscape):
    result = gpu_engine.edit(EditRequest(settings(num_inference_steps=28, acceleration="high"), [landscape]))
    assert result.transformer_passes == 12 and result.acceleration == "high"
    assert not any("torch.compile unavailable" in line for line in result.logs), result.logs
    assert not any("need a CUDA GPU" in line for line in result.logs), result.logs


def test_switching_loras_and_kontext_sizes_never_recompiles_after_warm_up(tmp_path, landscape):
    """Compiled `high`: LoRAs are hotswapped into fixed slots (prepared before the first adapter) and the blocks are
    compiled with dynamic shapes, so after one warm-up pass with a LoRA at each size, two LoRAs (and none) across
    three Kontext sizes compile no new graph. Counted by torch._dynamo's own counters."""
    from torch._dynamo.utils import counters

    from fluxedit.engine.loras import LoraSpec
    from tests import lora_builders as build

    first = LoraSpec(str(build.write(build.diffusers_lora(seed=21), tmp_path / "first.safetensors")))
    second = LoraSpec(str(build.write(build.diffusers_lora(seed=22), tmp_path / "second.safetensors")))
    sizes = ("1:1", "16:9", "9:16")  # 1024x1024, 1392x752, 752x1392: three sequence lengths
    engine = Engine.load(model="tiny", device="cuda", memory_mode="gpu")

    def edit(engine, size, loras):
        fields = {"resolution_mode": size, "num_inference_steps": 4, "acceleration": "high", "seed": 1}
        return engine.generate(EditRequest(settings(**fields), [landscape], loras=loras)).pixels

    try:
        assert engine.loras.hotswap_rank is not None
        for size in sizes:  # the warm-up: a LoRA in its slot, each size once
            edit(engine, size, [first])
        counters.clear()
        outputs = {}
        for size in sizes:
            for name, loras in (("second", [second]), ("first", [first]), ("none", [])):
                outputs[size, name] = edit(engine, size, loras)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs == 0, f"{graphs} graphs compiled after the warm-up: {dict(counters['recompiles'])}"
        assert engine.pipe.get_list_adapters()["transformer"] == ["slot_0"]
        for size in sizes:  # the switches took effect
            assert not np.array_equal(outputs[size, "first"], outputs[size, "second"])
            assert not np.array_equal(outputs[size, "first"], outputs[size, "none"])
    finally:
        del engine
        torch.cuda.empty_cache()


def test_running_out_of_gpu_memory_raises_the_error_the_worker_recognises(landscape):
    """The worker turns an exception named OutOfMemoryError into OUT_OF_MEMORY and a fresh process."""
    engine = Engine.load(model="tiny", device="cuda", memory_mode="gpu")
    torch.cuda.empty_cache()
    used = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 8 * 2**20) / total))
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
            engine.edit(EditRequest(settings(num_images=4), [landscape]))
        assert type(caught.value).__name__ == "OutOfMemoryError"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        del engine
        torch.cuda.empty_cache()
