import numpy as np
import pytest

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.acceleration import plan_steps
from fluxedit.engine.engine import EngineOptions
from tests.helpers import settings


@pytest.mark.parametrize(
    ("level", "steps", "expected_passes"),
    [("none", 28, 28), ("regular", 28, 15), ("high", 28, 12), ("none", 50, 50), ("regular", 50, 26), ("high", 50, 19)],
)
def test_full_passes_per_level(level, steps, expected_passes):
    plan = plan_steps(level, steps)
    assert len(plan.full_steps) == expected_passes
    assert {0, steps - 1} <= plan.full_steps  # the first and last steps always run in full


def test_regular_and_high_meet_their_pass_budgets_at_28_steps():
    assert len(plan_steps("regular", 28).full_steps) <= 15
    assert len(plan_steps("high", 28).full_steps) <= 13


def test_threshold_zero_switches_caching_off():
    assert plan_steps("high", 28, threshold=0).full_steps == frozenset(range(28))
    assert plan_steps("regular", 28, mode="adaptive", threshold=0).mode == "full"


def test_engine_reports_passes_and_caching_changes_only_the_skipped_steps(tiny_engine, landscape):
    full = tiny_engine.edit(EditRequest(settings(num_inference_steps=28, acceleration="none"), [landscape]))
    cached = tiny_engine.edit(EditRequest(settings(num_inference_steps=28, acceleration="regular"), [landscape]))
    assert (full.transformer_passes, cached.transformer_passes) == (28, 15)
    assert cached.acceleration == "regular" and cached.images != full.images


@pytest.mark.parametrize("mode", ["schedule", "adaptive"])
def test_caching_at_threshold_zero_equals_none_exactly(tiny_engine, landscape, mode):
    off = Engine(tiny_engine.model, options=EngineOptions(cache_mode=mode, cache_threshold=0))
    reference = tiny_engine.generate(EditRequest(settings(num_inference_steps=6), [landscape]))
    for level in ("regular", "high"):
        generation = off.generate(EditRequest(settings(num_inference_steps=6, acceleration=level), [landscape]))
        assert generation.transformer_passes == 6
        assert np.array_equal(generation.pixels, reference.pixels)


def test_adaptive_cache_skips_when_the_first_block_barely_changes(tiny_engine, landscape):
    lenient = Engine(tiny_engine.model, options=EngineOptions(cache_mode="adaptive", cache_threshold=1e9))
    generation = lenient.generate(EditRequest(settings(num_inference_steps=6, acceleration="regular"), [landscape]))
    assert generation.transformer_passes == 1  # only the first step ran past the first block
    assert np.isfinite(generation.pixels).all()


def test_high_on_cpu_falls_back_and_says_so(tiny_engine, landscape):
    result = tiny_engine.edit(EditRequest(settings(num_inference_steps=28, acceleration="high"), [landscape]))
    assert result.transformer_passes == 12
    assert any("fp8 and torch.compile need a CUDA GPU" in line for line in result.logs)


def test_the_same_prompt_is_encoded_once(tiny_engine, landscape):
    calls = []
    handle = tiny_engine.pipe.text_encoder_2.register_forward_hook(lambda *args: calls.append(1))
    try:
        for _ in range(3):
            tiny_engine.generate(
                EditRequest(settings(prompt="a prompt seen before", num_inference_steps=1), [landscape])
            )
        tiny_engine.generate(EditRequest(settings(prompt="a new prompt", num_inference_steps=1), [landscape]))
    finally:
        handle.remove()
    assert len(calls) == 2


def test_on_cuda_hotswap_is_prepared_before_compiling_with_dynamic_shapes(monkeypatch):
    """The CUDA-only configuration, checked on the CPU: an engine on a CUDA device prepares LoRA hotswapping with
    the target rank before any adapter or compilation, and `high` then compiles the blocks with dynamic shapes
    (one graph for the 17 Kontext sizes), on the loaded transformer itself."""
    import torch

    from fluxedit.engine.devices import Placement
    from fluxedit.engine.loading import LoadedModel, load_model
    from fluxedit.engine.loras import HOTSWAP_TARGET_RANK

    loaded = load_model("tiny", device="cpu")
    placement = Placement(torch.device("cuda"), loaded.placement.dtype, "gpu")
    events = []
    transformer = loaded.pipe.transformer
    original = loaded.pipe.enable_lora_hotswap

    def hotswap(**kwargs):
        events.append(("hotswap", kwargs))
        original(**kwargs)

    monkeypatch.setattr(loaded.pipe, "enable_lora_hotswap", hotswap)
    monkeypatch.setattr(transformer, "compile_repeated_blocks", lambda **kwargs: events.append(("compile", kwargs)))
    engine = Engine(LoadedModel(loaded.pipe, loaded.source, placement, loaded.precision))
    assert engine.loras.hotswap_rank == HOTSWAP_TARGET_RANK
    assert transformer._prepare_lora_hotswap_kwargs["target_rank"] == HOTSWAP_TARGET_RANK
    model, _notes = engine.fast.get()
    assert model is transformer
    assert events == [
        ("hotswap", {"target_rank": HOTSWAP_TARGET_RANK}),
        ("compile", {"fullgraph": True, "dynamic": True}),
    ]


def test_off_cuda_nothing_is_compiled_and_loras_load_the_ordinary_way(tiny_engine):
    assert tiny_engine.loras.hotswap_rank is None
    assert getattr(tiny_engine.pipe.transformer, "_prepare_lora_hotswap_kwargs", None) is None
