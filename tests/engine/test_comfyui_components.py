"""ComfyUI's separate component files as --components (clip_l.safetensors, t5xxl_fp16 / t5xxl_fp8_e4m3fn_scaled
.safetensors, ae.safetensors), written here from the tiny model's weights in ComfyUI's key layouts: transformers'
names for CLIP-L and T5 (the T5 file holding `shared.weight` only, as ComfyUI's do), BFL's LDM names for the
autoencoder with its attention as 1x1 convolutions. Loaded offline with a single-file transformer, no diffusers
repository and no hub cache: the edit equals the diffusers-folder model's."""

from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fluxedit.engine import EditRequest, Engine
from fluxedit.engine.comfy_components import ldm_vae_key
from fluxedit.engine.tiny import build_tiny_pipeline, write_tiny_bfl_checkpoint
from fluxedit.imaging.decode import DecodedImage
from fluxedit.schema import ModelUnavailable, OutputFormat
from tests.helpers import pattern, settings

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
STEPS = 2
# "t5xxl_fp16" is ComfyUI's file name; here it holds the tiny model's float32 weights unchanged, as do the other
# files, so the edit is the same float32 computation on the same numbers: equal up to summation order (measured
# max pixel difference 1.7e-6).
EXACT = 1e-5
# fp8_scaled T5: every T5 matrix rounded to 3 mantissa bits (per-tensor scale). Measured max pixel difference
# after 2 steps on this tiny model: 0.00038 (the prompt's embeddings move a little, the image little more); the
# bound is about 5x that, while a scale ignored (weights ~FP8_MAX / max|w| times too large) or the fp8 values
# read as integers move pixels far more.
FP8_T5_TOLERANCE = 0.002


def _save(path: Path, tensors: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
    return path


def comfy_vae(pipe) -> dict:
    blocks = len(pipe.vae.config.block_out_channels)
    out = {}
    for key, value in pipe.vae.state_dict().items():
        name = ldm_vae_key(key, blocks)
        if ".attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # BFL's attention projections are 1x1 convolutions
        out[name] = value
    return out


def comfy_clip(pipe) -> dict:
    """ComfyUI's clip_l.safetensors: transformers' CLIPTextModel names under `text_model.`, plus the projection
    (unused by FLUX: it reads the pooled output)."""
    state = {"text_model." + k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}
    width = pipe.text_encoder.config.hidden_size
    return {**state, "text_projection.weight": torch.zeros(width, width)}


def comfy_t5(pipe, fp8_scaled: bool = False) -> dict:
    state = {k: v for k, v in pipe.text_encoder_2.state_dict().items() if k != "encoder.embed_tokens.weight"}
    if not fp8_scaled:
        return state
    out = {"scaled_fp8": torch.empty(0, dtype=FP8)}
    for key, value in state.items():
        if value.ndim == 2 and key != "shared.weight" and "relative_attention_bias" not in key:
            scale = value.abs().max().float() / FP8_MAX
            out[key] = (value / scale).to(FP8)
            out[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def comfy_install(tmp_path_factory):
    """A ComfyUI-like install: models/diffusion_models/, models/text_encoders/ and models/vae/."""
    root = tmp_path_factory.mktemp("ComfyUI")
    models = root / "models"
    pipe = build_tiny_pipeline()
    transformer = write_tiny_bfl_checkpoint(models / "diffusion_models" / "flux1-dev-kontext.safetensors")
    _save(models / "text_encoders" / "clip_l.safetensors", comfy_clip(pipe))
    _save(models / "text_encoders" / "t5xxl_fp16.safetensors", comfy_t5(pipe))
    _save(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors", comfy_t5(pipe, fp8_scaled=True))
    _save(models / "vae" / "ae.safetensors", comfy_vae(pipe))
    return {"models": models, "transformer": transformer}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache: the component files alone must do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked for a file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)


@pytest.fixture(scope="module")
def square():
    return DecodedImage(pattern(128, 128), OutputFormat.png)


def run(engine: Engine, image: DecodedImage) -> np.ndarray:
    fields = {"resolution_mode": "1:1", "num_inference_steps": STEPS, "seed": 5}
    return engine.generate(EditRequest(settings(**fields), [image])).pixels.astype(np.float32)


@pytest.fixture(scope="module")
def reference(tiny_folder, square):
    return run(Engine.load(model=str(tiny_folder), device="cpu", dtype="float32"), square)


def test_a_comfyui_models_folder_runs_offline_with_a_single_file_transformer(comfy_install, offline, square, reference):
    engine = Engine.load(
        model=str(comfy_install["transformer"]), components=str(comfy_install["models"]), device="cpu", dtype="float32"
    )
    assert engine.model.source.kind == "single_file"
    assert type(engine.pipe.tokenizer_2).__name__ == "T5Tokenizer"  # the tiny architecture's own tokenizer
    assert engine.pipe.text_encoder_2.encoder.embed_tokens.weight is engine.pipe.text_encoder_2.shared.weight
    difference = np.abs(run(engine, square) - reference).max()
    assert difference <= EXACT, difference


def test_a_list_of_files_with_the_fp8_scaled_t5_edits_close_to_the_float_model(
    comfy_install, offline, square, reference
):
    text = comfy_install["models"] / "text_encoders"
    vae, clip = comfy_install["models"] / "vae" / "ae.safetensors", text / "clip_l.safetensors"
    t5 = text / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    listed = ",".join(str(p) for p in (vae, t5, clip))  # in any order: each file is told by its keys
    engine = Engine.load(model=str(comfy_install["transformer"]), components=listed, device="cpu", dtype="float32")
    difference = np.abs(run(engine, square) - reference).max()
    assert 0 < difference <= FP8_T5_TOLERANCE, f"fp8_scaled T5: max pixel difference {difference:.4f}"


def test_a_gguf_transformer_with_the_comfyui_components_edits_as_with_the_diffusers_folder(
    comfy_install, tiny_folder, offline, square, tmp_path
):
    """The GGUF path takes the same components: a BF16 GGUF transformer with ComfyUI's files gives what it gives
    with the diffusers folder's text encoders and VAE (the same weights: equal up to summation order)."""
    import gguf

    from tests.engine.test_gguf import write_gguf

    path = write_gguf(tmp_path / "flux1-kontext-dev-BF16.gguf", gguf.GGMLQuantizationType.BF16)
    with_folder = run(Engine.load(model=str(path), components=str(tiny_folder), device="cpu", dtype="float32"), square)
    engine = Engine.load(model=str(path), components=str(comfy_install["models"]), device="cpu", dtype="float32")
    assert engine.model.source.kind == "gguf"
    assert np.abs(run(engine, square) - with_folder).max() <= EXACT


def test_a_component_file_with_missing_keys_is_named_with_what_it_lacks(comfy_install, tmp_path):
    pipe = build_tiny_pipeline()
    clip = {k: v for k, v in comfy_clip(pipe).items() if ".layers.3." not in k}
    folder = tmp_path / "models"
    _save(folder / "clip" / "clip_l.safetensors", clip)
    _save(folder / "t5xxl_fp16.safetensors", comfy_t5(pipe))
    _save(folder / "vae" / "ae.safetensors", comfy_vae(pipe))
    with pytest.raises(ModelUnavailable) as raised:
        Engine.load(model=str(comfy_install["transformer"]), components=str(folder), device="cpu")
    message = str(raised.value)
    assert "clip_l.safetensors is not a complete CLIP-L text encoder" in message
    assert "text_model.encoder.layers.3." in message


def test_a_folder_without_the_autoencoder_says_which_file_is_missing(comfy_install, tmp_path):
    pipe = build_tiny_pipeline()
    _save(tmp_path / "clip_l.safetensors", comfy_clip(pipe))
    _save(tmp_path / "t5xxl_fp16.safetensors", comfy_t5(pipe))
    with pytest.raises(ModelUnavailable, match=r"lacks the FLUX autoencoder \(ae\) \(ae.safetensors\)"):
        Engine.load(model=str(comfy_install["transformer"]), components=str(tmp_path), device="cpu")


def _comfy_tokenizers(root: Path) -> None:
    """A ComfyUI install's own tokenizer files (here holding the tiny model's vocabularies): comfy/sd1_tokenizer/
    with vocab.json and merges.txt, comfy/text_encoders/t5_tokenizer/ with tokenizer.json."""
    import json

    from fluxedit.engine.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer

    clip_dir = root / "comfy" / "sd1_tokenizer"
    clip_dir.mkdir(parents=True)
    (clip_dir / "vocab.json").write_text(json.dumps(tiny_clip_tokenizer().get_vocab()))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n")
    tiny_t5_tokenizer().save_pretrained(root / "comfy" / "text_encoders" / "t5_tokenizer")


def test_the_real_architectures_tokenizers_come_from_the_comfyui_install(tmp_path, monkeypatch):
    from fluxedit.engine.comfy_components import ComponentFiles, _tokenizers
    from fluxedit.engine.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    files = ComponentFiles("clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors", tmp_path / "models")
    with pytest.raises(ModelUnavailable, match=r"CLIP-L's and T5's were found nowhere.*comfy/sd1_tokenizer/"):
        _tokenizers(files, is_tiny=False)
    _comfy_tokenizers(tmp_path)
    clip, t5 = _tokenizers(files, is_tiny=False)
    for text in ("a red scarf", "Make it WATERCOLOUR!"):
        assert clip(text).input_ids == tiny_clip_tokenizer()(text).input_ids
        assert t5(text).input_ids == tiny_t5_tokenizer()(text).input_ids
