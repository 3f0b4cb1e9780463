"""GGUF transformers (`--model file.gguf --components <diffusers folder>`): tiny GGUF files written here with the
`gguf` package, in BFL's key names as the shared Kontext conversions use, load and edit close to the float model;
a tensor type diffusers cannot read and a truncated download each fail with a message naming the file and why."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.bfl_checkpoint import diffusers_to_bfl
from fluxedit.engine.tiny import build_tiny_pipeline
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import ModelUnavailable, OutputFormat
from tests.helpers import pattern, settings

Q = gguf.GGMLQuantizationType
STEPS = 2
# Max pixel difference (pixels in [0, 1]) from the float32 model after 2 steps, measured on this tiny model:
# Q8_0 0.0084, Q4_0 0.17, BF16 0.0040. Q4_0 is far the worst because the tiny model's weights are random
# (no outliers, every block as sensitive as the next) and 4 bits with one scale per 32 weights is coarse. The
# bounds are about twice what was measured: room for other CPUs' kernels, tight enough that a wrong row split
# or a swapped modulation half (differences of order 1) cannot pass.
TOLERANCE = {Q.Q8_0: 0.02, Q.Q4_0: 0.35, Q.BF16: 0.01}


def write_gguf(path: Path, kind: Q, unsupported: str | None = None) -> Path:
    """The tiny transformer as a GGUF file: 2-D weights whose rows are whole 32-value blocks in `kind`, the rest
    (biases, norm scales, narrow matrices) in F32, as the real conversions keep their small tensors.
    `unsupported` names a tensor written as Q8_1 instead, a type diffusers' GGUF layers do not dequantize."""
    state = diffusers_to_bfl(build_tiny_pipeline().transformer.state_dict())
    writer = gguf.GGUFWriter(str(path), arch="flux")
    for name, tensor in state.items():
        data = tensor.float().numpy()
        if name == unsupported:
            width = data.shape[1] // 32 * gguf.GGML_QUANT_SIZES[Q.Q8_1][1]  # bytes per row: its blocks of 32
            writer.add_tensor(name, np.zeros((data.shape[0], width), np.uint8), raw_dtype=Q.Q8_1)
        elif data.ndim == 2 and data.shape[1] % 32 == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
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
def gguf_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {kind: write_gguf(folder / f"tiny-kontext-{kind.name}.gguf", kind) for kind in TOLERANCE}


@pytest.mark.parametrize("kind", list(TOLERANCE), ids=lambda kind: kind.name)
def test_a_gguf_transformer_edits_close_to_the_float_model(gguf_files, tiny_folder, square, reference, kind):
    engine = Engine.load(model=str(gguf_files[kind]), components=str(tiny_folder), device="cpu")
    assert engine.model.source.kind == "gguf"
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "GGUFParameter" and weight.quant_type == kind  # kept quantized, not upcast
    pixels = run(engine, square)
    error = float(np.abs(pixels - reference).max())
    assert 0 < error < TOLERANCE[kind], error
    assert np.array_equal(run(engine, square), pixels)  # deterministic: the same seed gives the same pixels


def test_quantize_does_not_apply_to_a_gguf_file(gguf_files, tiny_folder):
    with pytest.raises(ModelUnavailable, match="GGUF file, quantized already: --quantize int8"):
        Engine.load(model=str(gguf_files[Q.Q8_0]), components=str(tiny_folder), device="cpu", quantize="int8")


def test_an_unsupported_tensor_type_names_the_file_the_tensor_and_the_type(tmp_path, tiny_folder):
    path = write_gguf(tmp_path / "odd.gguf", Q.Q8_0, unsupported="double_blocks.0.img_attn.qkv.weight")
    with pytest.raises(ModelUnavailable) as caught:
        Engine.load(model=str(path), components=str(tiny_folder), device="cpu")
    message = str(caught.value)
    assert str(path) in message and "double_blocks.0.img_attn.qkv.weight" in message, message
    assert "GGUF type Q8_1, which cannot be loaded" in message and "Q4_0" in message, message  # and what can


def test_a_truncated_file_says_so(gguf_files, tmp_path, tiny_folder):
    whole = gguf_files[Q.Q8_0].read_bytes()
    path = tmp_path / "interrupted.gguf"
    path.write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(ModelUnavailable) as caught:
        Engine.load(model=str(path), components=str(tiny_folder), device="cpu")
    message = str(caught.value)
    assert str(path) in message and "is truncated" in message and f"{len(whole) - 1000:,} bytes" in message, message
