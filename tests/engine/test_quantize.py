"""Quantized weights, chosen at load: int8, fp8 (weight-only off fp8 GPUs) and NF4 edit on the tiny model on the
CPU; LoRAs apply on them at every acceleration level; `high` runs the one loaded transformer; `auto` is computed."""

import numpy as np
import pytest
import torch

from fluxedit.config import Settings
from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.loras import LoraSpec
from fluxedit.engine.precision_choice import REAL_T5, REAL_TRANSFORMER, choose_precision, weight_bytes
from fluxedit.engine.quantize import TRANSFORMER_KEEP, pipeline_quantization, quantizes
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import OutputFormat
from tests import lora_builders as build
from tests.helpers import pattern, settings

GIB = 1024**3
STEPS = 3  # a 1 MP edit costs ~1 s a step here; each level still runs its own transformer path (`high`: the fast one)
# The tiny model's outputs are pixels in [0, 1]. Quantization error measured here (max over pixels, 3 to 8 steps):
# int8 ~0.01, fp8 weight-only ~0.05, NF4 ~0.2 (random weights are the worst case for 4 bits: no outliers to
# spare, every block equally sensitive). The bounds leave about 2x room over what was measured.
TOLERANCE = {"int8": 0.03, "fp8": 0.1, "nf4": 0.4}


@pytest.fixture(scope="module")
def square():
    return DecodedImage(pattern(256, 256), OutputFormat.png)


def run(engine, image, loras=(), acceleration="none"):
    fields = {"resolution_mode": "1:1", "num_inference_steps": STEPS, "seed": 3, "acceleration": acceleration}
    return engine.generate(EditRequest(settings(**fields), [image], loras=list(loras))).pixels


@pytest.fixture(scope="module")
def reference(tiny_engine, square):
    return run(tiny_engine, square)


@pytest.fixture(scope="module", params=["int8", "fp8", "nf4"])
def quantized(request):
    return request.param, Engine.load(model="tiny", device="cpu", quantize=request.param)


def test_a_quantized_edit_runs_close_to_the_float_model(quantized, square, reference):
    precision, engine = quantized
    assert engine.model.precision.transformer == precision
    block = engine.pipe.transformer.transformer_blocks[0].attn.to_q
    assert type(block).__name__ == "Linear4bit" if precision == "nf4" else type(block.weight).__name__ != "Parameter"
    pixels = run(engine, square)
    error = np.abs(pixels - reference).max()
    assert 0 < error < TOLERANCE[precision], error
    assert np.array_equal(run(engine, square), pixels)  # deterministic


@pytest.mark.parametrize("acceleration", ["none", "regular", "high"])
def test_a_lora_applies_on_quantized_weights_at_every_level(quantized, square, tmp_path, acceleration):
    _, engine = quantized
    path = build.write(build.diffusers_lora(seed=11), tmp_path / "style.safetensors")
    without = run(engine, square, acceleration=acceleration)
    with_lora = run(engine, square, [LoraSpec(str(path), 1.0)], acceleration)
    assert np.abs(with_lora - without).max() > 1e-2
    assert np.array_equal(run(engine, square, [LoraSpec(str(path), 0.0)], acceleration), without)


def test_high_runs_the_one_loaded_transformer(quantized, square):
    _, engine = quantized
    run(engine, square, acceleration="high")
    model, _ = engine.fast.get()
    assert model is engine.pipe.transformer
    held = [value for value in vars(engine.fast).values() if isinstance(value, torch.nn.Module)]
    assert held == [engine.pipe.transformer]  # no second (fp8 or other) copy kept anywhere


def test_t5_quantized_too(square, reference):
    engine = Engine.load(model="tiny", device="cpu", quantize="none", text_encoder_quantize="int8")
    weight = engine.pipe.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight
    assert type(weight).__name__ == "Int8Tensor"
    assert type(engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight) is torch.nn.Parameter
    assert 0 < np.abs(run(engine, square) - reference).max() < TOLERANCE["int8"]


def test_a_folder_is_quantized_while_it_loads(tiny_folder, square, reference):
    """diffusers' TorchAoConfig path (the real model's): the tiny diffusers folder, int8, on the CPU."""
    engine = Engine.load(model=str(tiny_folder), device="cpu", quantize="int8", text_encoder_quantize="int8")
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "Int8Tensor"
    assert type(engine.pipe.transformer.x_embedder.weight) is torch.nn.Parameter  # kept in the model dtype
    assert np.abs(run(engine, square) - reference).max() < TOLERANCE["int8"]


def test_the_load_time_configs_name_the_libraries():
    """The GPU paths (NF4 through bitsandbytes needs CUDA at load): the configs built for diffusers and
    transformers, checked without a GPU."""
    config = pipeline_quantization("nf4", "int8", torch.device("cpu"), torch.bfloat16)
    transformer, t5 = config.quant_mapping["transformer"], config.quant_mapping["text_encoder_2"]
    assert type(transformer).__module__.startswith("diffusers") and transformer.load_in_4bit
    assert transformer.bnb_4bit_quant_type == "nf4" and transformer.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(transformer.llm_int8_skip_modules) == set(TRANSFORMER_KEEP)
    assert type(t5).__module__.startswith("transformers") and type(t5.quant_type).__name__ == "Int8WeightOnlyConfig"
    fp8 = pipeline_quantization("fp8", "none", torch.device("cpu"), torch.bfloat16).quant_mapping["transformer"]
    assert type(fp8.quant_type).__name__ == "Float8WeightOnlyConfig"  # no fp8 matmuls off an fp8 GPU
    assert pipeline_quantization("none", "none", torch.device("cpu"), torch.bfloat16) is None


def test_only_the_embedders_and_last_modulation_keep_the_dtype():
    assert quantizes("transformer_blocks.0.attn.to_q") and quantizes("single_transformer_blocks.3.proj_out")
    assert quantizes("proj_out")
    assert not quantizes("x_embedder") and not quantizes("time_text_embed.timestep_embedder.linear_1")


@pytest.mark.parametrize(
    ("free_gib", "fp8", "expected"),
    [
        (80, True, ("none", "none")),  # everything in bf16 with room
        (40, True, ("none", "none")),
        (30, True, ("fp8", "none")),
        (24, True, ("fp8", "int8")),  # a 24 GB card: fp8 transformer, int8 T5, all on the GPU
        (24, False, ("int8", "int8")),  # an Ampere card: int8 instead of fp8
        (16, True, ("nf4", "int8")),
        (12, True, ("nf4", "int8")),  # not all fits: the NF4 transformer alone does, T5 moves in turn
    ],
)
def test_auto_picks_the_largest_precision_that_fits(free_gib, fp8, expected):
    choice = choose_precision("auto", "auto", free_gib * GIB, fp8)
    assert (choice.transformer, choice.text_encoder) == expected, choice.reason
    assert f"{free_gib:.1f} GiB free" in choice.reason


def test_auto_off_cuda_and_fixed_choices():
    assert choose_precision("auto", "auto", None, False).transformer == "none"
    assert choose_precision("int8", "auto", None, False).transformer == "int8"
    fixed = choose_precision("nf4", "none", 80 * GIB, True)
    assert (fixed.transformer, fixed.text_encoder) == ("nf4", "none")


def test_the_real_models_counts_are_computed_from_the_classes():
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        model = FluxTransformer2DModel(guidance_embeds=True)  # diffusers' defaults are FLUX.1's geometry
    linear = sum(m.weight.numel() for n, m in model.named_modules() if type(m) is torch.nn.Linear and quantizes(n))
    total = sum(p.numel() for p in model.parameters())
    assert (linear, total - linear) == REAL_TRANSFORMER
    assert weight_bytes(REAL_TRANSFORMER, "none") == pytest.approx(23.8e9, rel=0.01)
    assert weight_bytes(REAL_T5, "none") == pytest.approx(9.8e9, rel=0.01)


def test_settings_carry_the_precisions(monkeypatch):
    monkeypatch.setenv("FLUXEDIT_QUANTIZE", "int8")
    monkeypatch.setenv("FLUXEDIT_TEXT_ENCODER_QUANTIZE", "nf4")
    arguments = Settings().engine_config().model_arguments()
    assert (arguments["quantize"], arguments["text_encoder_quantize"]) == ("int8", "nf4")
    monkeypatch.setenv("FLUXEDIT_QUANTIZE", "int3")
    with pytest.raises(ValueError, match="quantize"):
        Settings()
