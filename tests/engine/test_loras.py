"""LoRA adapters on the engine: every common layout, scales, several at once, refusals."""

import numpy as np
import pytest
import torch

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.loras import LoraManager, LoraSpec
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import InputError, OutputFormat
from tests import lora_builders as build
from tests.helpers import pattern, settings


@pytest.fixture(scope="module")
def engine():
    return Engine.load(model="tiny", device="cpu")  # its own: adapters stay loaded on it


@pytest.fixture(scope="module")
def square():
    return DecodedImage(pattern(256, 256), OutputFormat.png)


def run(engine, image, loras=(), **overrides):
    fields = {"resolution_mode": "1:1", "num_inference_steps": 2} | overrides
    return engine.generate(EditRequest(settings(**fields), [image], loras=list(loras))).pixels


@pytest.fixture(scope="module")
def base(engine, square):
    return run(engine, square)


@pytest.mark.parametrize(
    "layout",
    ["diffusers", "kohya", "comfyui_bfl", "fal_kontext", "xlabs"],
)
def test_each_layout_loads_and_changes_the_output(engine, square, base, tmp_path, layout):
    state = {
        "diffusers": build.diffusers_lora,
        "kohya": build.kohya_lora,
        "comfyui_bfl": lambda: build.bfl_layout_lora("diffusion_model."),
        "fal_kontext": lambda: build.bfl_layout_lora("base_model.model."),
        "xlabs": build.xlabs_lora,
    }[layout]()
    path = build.write(state, tmp_path / f"{layout}.safetensors")
    with_lora = run(engine, square, [LoraSpec(str(path), 1.0)])
    assert np.abs(with_lora - base).max() > 1e-3
    at_zero = run(engine, square, [LoraSpec(str(path), 0.0)])
    assert np.array_equal(at_zero, base)  # scale 0 equals no LoRA
    assert np.array_equal(run(engine, square), base)  # and without it, the base model again


def test_fused_bfl_layers_are_split_exactly(tmp_path):
    """A ComfyUI/BFL LoRA on fused q,k,v must act exactly as the same update on diffusers' separate layers."""
    from fluxedit.engine.lora_formats import bfl_lora_to_diffusers

    state = build.bfl_layout_lora("diffusion_model.")
    converted = bfl_lora_to_diffusers(state, build.INNER)
    fused = (
        state["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"]
        @ state["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"]
    )
    parts = [
        converted[f"transformer.transformer_blocks.0.attn.{n}.lora_B.weight"]
        @ converted[f"transformer.transformer_blocks.0.attn.{n}.lora_A.weight"]
        for n in ("to_q", "to_k", "to_v")
    ]
    assert torch.allclose(torch.cat(parts), fused)


def test_two_loras_at_half_equal_their_sum_at_half(engine, square, tmp_path):
    first, second = build.diffusers_lora(seed=10), build.diffusers_lora(seed=11)
    a = build.write(first, tmp_path / "a.safetensors")
    b = build.write(second, tmp_path / "b.safetensors")
    total = build.write(build.summed_lora(first, second), tmp_path / "sum.safetensors")
    together = run(engine, square, [LoraSpec(str(a), 0.5), LoraSpec(str(b), 0.5)])
    summed = run(engine, square, [LoraSpec(str(total), 0.5)])
    assert np.abs(together - summed).max() < 1e-4


def test_result_equals_diffusers_own_load_lora_weights(engine, square, tmp_path):
    path = build.write(build.diffusers_lora(seed=20), tmp_path / "style.safetensors")
    ours = run(engine, square, [LoraSpec(str(path), 0.8)], num_inference_steps=2, seed=99)
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(path), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.8])
    reference = pipe(
        image=square.image, prompt="make it blue", num_inference_steps=2, guidance_scale=2.5, height=1024,
        width=1024, generator=torch.Generator().manual_seed(99), output_type="np",
    ).images  # fmt: skip
    assert np.abs(ours - reference).max() < 1e-4


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (build.sdxl_lora(), "does not fit FLUX.1 Kontext|is not a FLUX LoRA"),
        (build.full_size_lora(), "does not fit FLUX.1 Kontext"),
    ],
)
def test_a_lora_for_another_model_is_refused_and_the_base_is_untouched(engine, square, base, tmp_path, state, message):
    path = build.write(state, tmp_path / "other.safetensors")
    with pytest.raises(InputError, match=message) as refused:
        run(engine, square, [LoraSpec(str(path), 1.0, field="loras.0.path")])
    assert refused.value.field == "loras.0.path"
    assert np.array_equal(run(engine, square), base)


def test_a_pickle_file_is_refused(engine, square, tmp_path):
    pickled = tmp_path / "evil.safetensors"
    torch.save({"transformer.x.lora_A.weight": torch.zeros(1)}, pickled)  # a pickle, whatever its name says
    with pytest.raises(InputError, match="not a readable safetensors file"):
        run(engine, square, [LoraSpec(str(pickled), 1.0)])
    named_pt = tmp_path / "model.pt"
    named_pt.write_bytes(pickled.read_bytes())
    with pytest.raises(InputError, match="only safetensors LoRAs are loaded"):
        run(engine, square, [LoraSpec(str(named_pt), 1.0)])


def test_adapters_stay_loaded_up_to_the_limit(square, tmp_path):
    from fluxedit.engine.engine import EngineOptions

    engine = Engine(Engine.load(model="tiny", device="cpu").model, options=EngineOptions(max_loras=2))
    paths = [build.write(build.diffusers_lora(seed=30 + i), tmp_path / f"l{i}.safetensors") for i in range(3)]
    for path in paths:
        run(engine, square, [LoraSpec(str(path), 1.0)], num_inference_steps=1)
    assert len(engine.loras.loaded) == 2  # the least recently used one was dropped
    assert list(engine.loras.loaded.values()) == [str(paths[1]), str(paths[2])]


def test_hotswap_mode_swaps_each_lora_into_its_slot_in_place_and_edits_as_a_fresh_load(engine, square, base, tmp_path):
    """The compiled (CUDA) path's LoRA switching, run eagerly on the CPU: diffusers' hotswap is prepared with the
    target rank before the first adapter, the second LoRA replaces the first's weights in slot_0 (no new adapter,
    nothing for a compiled graph to recompile for), and each edit equals the same LoRA loaded the ordinary way."""
    first = build.write(build.diffusers_lora(seed=11), tmp_path / "first.safetensors")
    second = build.write(build.diffusers_lora(seed=12), tmp_path / "second.safetensors")
    expected = {path: run(engine, square, [LoraSpec(str(path), 0.8)]) for path in (first, second)}

    swapping = Engine.load(model="tiny", device="cpu")
    calls = []
    for method in ("enable_lora_hotswap", "load_lora_weights", "set_adapters"):
        original = getattr(swapping.pipe, method)

        def record(*args, _original=original, _method=method, **kwargs):
            calls.append((_method, kwargs.get("adapter_name"), kwargs.get("hotswap", False), kwargs.get("target_rank")))
            return _original(*args, **kwargs)

        setattr(swapping.pipe, method, record)
    swapping.loras = LoraManager(swapping.pipe, hotswap_rank=8)
    assert calls == [("enable_lora_hotswap", None, False, 8)]  # before any adapter exists
    with_first = run(swapping, square, [LoraSpec(str(first), 0.8)])
    with_second = run(swapping, square, [LoraSpec(str(second), 0.8)])
    # slot_0 loaded once and made active once; the second LoRA swapped into it, its scale written in place
    assert calls[1:] == [
        ("load_lora_weights", "slot_0", False, None),
        ("set_adapters", None, False, None),
        ("load_lora_weights", "slot_0", True, None),
    ]
    assert swapping.pipe.get_list_adapters()["transformer"] == ["slot_0"]  # one slot, swapped in place
    layers = [m for m in swapping.pipe.transformer.modules() if isinstance(getattr(m, "scaling", None), dict)]
    assert layers and all(isinstance(m.scaling["slot_0"], torch.Tensor) for m in layers)  # no float constants
    # Zero-padded to the target rank: the same products plus zeros, up to float32 rounding.
    assert np.abs(with_first - expected[first]).max() < 1e-5
    assert np.abs(with_second - expected[second]).max() < 1e-5
    assert np.array_equal(run(swapping, square), base)  # no LoRA: the slot stays, at weight 0
    assert np.abs(run(swapping, square, [LoraSpec(str(second), 0.8)]) - expected[second]).max() < 1e-5
    assert len(calls) == 4  # nothing loaded or re-activated for these: only the scalings changed


def test_hotswap_mode_refuses_a_lora_for_another_model_and_keeps_working(square, base, tmp_path):
    swapping = Engine.load(model="tiny", device="cpu")
    swapping.loras = LoraManager(swapping.pipe, hotswap_rank=8)
    good = build.write(build.diffusers_lora(seed=13), tmp_path / "good.safetensors")
    sdxl = build.write(build.sdxl_lora(), tmp_path / "sdxl.safetensors")
    with_good = run(swapping, square, [LoraSpec(str(good), 1.0)])
    with pytest.raises(InputError, match=r"does not fit FLUX\.1 Kontext|is not a FLUX LoRA"):
        run(swapping, square, [LoraSpec(str(sdxl), 1.0)])
    assert swapping.loras.slots == []  # the refused LoRA's slot is gone, nothing half-loaded stays active
    assert np.array_equal(run(swapping, square), base)
    assert np.abs(run(swapping, square, [LoraSpec(str(good), 1.0)]) - with_good).max() < 1e-6
