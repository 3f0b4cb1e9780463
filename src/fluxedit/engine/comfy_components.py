"""ComfyUI's separate component files as `--components`: CLIP-L, T5-XXL and the BFL autoencoder.

A ComfyUI install keeps them as `models/text_encoders/clip_l.safetensors` (or `models/clip/`),
`t5xxl_fp16.safetensors` / `t5xxl_fp8_e4m3fn(_scaled).safetensors` and `models/vae/ae.safetensors`.
Their key layouts:
- CLIP-L and T5: transformers' own names (`text_model.…`, `encoder.block.N.…`, `shared.weight`), sometimes
  under a prefix; the fp8 T5 files hold float8_e4m3fn matrices, the "_scaled" ones with a per-tensor
  `scale_weight` (real weight = fp8 weight x scale) and a `scaled_fp8` marker.
- ae.safetensors: BFL's (the LDM) names, `encoder.down.I.block.J.…`, `decoder.up.I.…` numbered from the
  lowest resolution, `mid.attn_1.q` as 1x1 convolutions; mapped here onto diffusers' AutoencoderKL.
The files carry no configs and no tokenizers. The configs are those of the known architecture (FLUX.1's
CLIP-L, T5-XXL v1.1 and autoencoder, or the tiny model's), told apart by the files' widths and then checked
key by key and shape by shape. The tokenizers are not shipped: they come from the ComfyUI install itself
(`comfy/sd1_tokenizer/`, `comfy/text_encoders/t5_tokenizer/`), else from a local hub cache of FLUX.1 Kontext.
Every file is read tensor by tensor (memory-mapped); fp8 T5 weights are dequantized one at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from ..config import DEFAULT_MODEL
from ..schema import ModelUnavailable
from . import tiny

SCALED_FP8_MARKER = "scaled_fp8"
# Where a ComfyUI install keeps each kind, relative to its models/ folder (or the folder given itself).
SUBFOLDERS = ("", "text_encoders", "clip", "vae")
# Preferred file names per part, best first: the fp16 T5 over the fp8 ones.
FILE_NAMES = {
    "clip_l": ("clip_l.safetensors",),
    "t5": ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "t5xxl_fp8_e4m3fn.safetensors"),
    "vae": ("ae.safetensors",),
}
PART_NAMES = {"clip_l": "CLIP-L text encoder", "t5": "T5-XXL text encoder", "vae": "FLUX autoencoder (ae)"}
# FLUX.1's component configs (the real model's text_encoder/, text_encoder_2/ and vae/ config.json values).
CLIP_L = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}  # fmt: skip
T5_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False, "decoder_start_token_id": 0, "pad_token_id": 0,
    "eos_token_id": 1,
}  # fmt: skip
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False,
    "use_post_quant_conv": False, "shift_factor": 0.1159, "scaling_factor": 0.3611,
}  # fmt: skip
KONTEXT_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}  # fmt: skip


@dataclass(frozen=True)
class ComponentFiles:
    clip_l: str
    t5: str
    vae: str
    search_root: Path | None  # the folder given, where a ComfyUI install's tokenizers are looked for

    @property
    def tiny(self) -> bool:
        """The tiny model's geometry (told by CLIP's width), else FLUX.1's."""
        with _open(self.clip_l) as handle:
            names = list(handle.keys())  # a safe_open handle is not iterable
            key = next((k for k in names if k.endswith("token_embedding.weight")), None)
            return key is not None and handle.get_slice(key).get_shape()[1] == tiny.TEXT_WIDTH

    def transformer_config(self) -> dict:
        return dict(tiny.TINY_TRANSFORMER_CONFIG if self.tiny else KONTEXT_TRANSFORMER)


def comfy_component_files(value: str) -> ComponentFiles | None:
    """The ComfyUI component files `value` names (a folder without model_index.json, or a comma-separated list of
    .safetensors files), or None when it names something else (a diffusers folder, a hub id, "tiny")."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if len(items) == 1:
        folder = Path(items[0]).expanduser()
        if not folder.is_dir() or (folder / "model_index.json").is_file() or (folder / "transformer").is_dir():
            return None
        found = {part: _find(folder, names) for part, names in FILE_NAMES.items()}
        if not any(found.values()):
            return None
        _require_all(found, f"{value} (and its {', '.join(s + '/' for s in SUBFOLDERS if s)})")
        return ComponentFiles(**found, search_root=folder)
    files = [Path(item).expanduser() for item in items]
    for path in files:
        if not path.is_file() or path.suffix != ".safetensors":
            raise ModelUnavailable(f"--components lists {path}, which is not a .safetensors file")
    found = {part: None for part in FILE_NAMES}
    for path in files:
        found[_part_of(path)] = str(path)
    _require_all(found, "the --components list")
    return ComponentFiles(**found, search_root=files[0].parent)


def _find(folder: Path, names: tuple[str, ...]) -> str | None:
    for name in names:
        for sub in SUBFOLDERS:
            if (folder / sub / name).is_file():
                return str(folder / sub / name)
    return None


def _require_all(found: dict, where: str) -> None:
    missing = [f"{PART_NAMES[part]} ({' or '.join(FILE_NAMES[part])})" for part, path in found.items() if not path]
    if missing:
        raise ModelUnavailable(f"--components: {where} lacks the {'; the '.join(missing)}")


def _part_of(path: Path) -> str:
    """Which part a listed file is, by its keys (names vary: clip_l.safetensors, t5xxl_fp8_e4m3fn.safetensors...)."""
    with _open(str(path)) as handle:
        keys = list(handle.keys())
    if any(k.endswith("token_embedding.weight") for k in keys):
        return "clip_l"
    if any(k.endswith("SelfAttention.q.weight") for k in keys):
        return "t5"
    if any(k.endswith("decoder.conv_in.weight") for k in keys):
        return "vae"
    raise ModelUnavailable(f"{path} is none of CLIP-L, T5-XXL or the FLUX autoencoder (ae): its keys fit none")


class _open:
    """safe_open as a context manager that names the file when it is not a readable safetensors file."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        try:
            self.handle = safe_open(self.path, framework="pt")
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise ModelUnavailable(f"{self.path} is not a readable safetensors file: {error}") from None
        return self.handle.__enter__()

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def ldm_vae_key(key: str, num_blocks: int) -> str:
    """The key in BFL's ae.safetensors of the diffusers AutoencoderKL parameter `key`."""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    key = key.replace("mid_block.attentions.0.", "mid.attn_1.")
    for ours, theirs in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        key = key.replace(f"attn_1.{ours}.", f"attn_1.{theirs}.")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", key)
    # diffusers counts the decoder's blocks from the lowest resolution up; BFL from the highest
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{num_blocks - 1 - int(m[1])}.block.", key)
    return re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{num_blocks - 1 - int(m[1])}.upsample.", key)


def load_comfy_pipeline(files: ComponentFiles, transformer, dtype: torch.dtype) -> FluxKontextPipeline:
    """The pipeline around `transformer` with the text encoders and autoencoder of ComfyUI's files."""
    is_tiny = files.tiny
    clip_tokenizer, t5_tokenizer = _tokenizers(files, is_tiny)
    clip_config = tiny.tiny_clip_config(clip_tokenizer) if is_tiny else CLIPTextConfig(**CLIP_L)
    t5_config = tiny.tiny_t5_config(t5_tokenizer) if is_tiny else T5Config(**T5_XXL)
    vae_config = tiny.TINY_VAE_CONFIG if is_tiny else FLUX_VAE
    with init_empty_weights():
        clip = CLIPTextModel(clip_config)
        t5 = T5EncoderModel(t5_config)
        vae = AutoencoderKL(**vae_config)
    _fill(clip, files.clip_l, "CLIP-L text encoder", dtype, lambda key: key)
    _fill(t5, files.t5, "T5-XXL text encoder", dtype, lambda key: key)
    blocks = len(vae_config["block_out_channels"])
    _fill(vae, files.vae, "FLUX autoencoder (ae)", dtype, lambda key: ldm_vae_key(key, blocks))
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**tiny.FLUX_SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=clip.eval(),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5.eval(),
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def _fill(model: torch.nn.Module, path: str, part: str, dtype: torch.dtype, file_key) -> None:
    """Assign `model`'s (empty) parameters from the file, one tensor at a time; name what is missing."""
    buffers = {name for name, _ in model.named_buffers()}  # position ids and the like: built, not stored
    expected = {k: v for k, v in model.state_dict().items() if k not in buffers}
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None) or []  # T5's wo, as from_pretrained keeps it
    with _open(path) as handle:
        keys = list(handle.keys())
        prefix = _prefix(keys, [file_key(k) for k in expected])
        names = {k.removeprefix(prefix): k for k in keys if k.startswith(prefix)}
        # T5 ties its embedding to `shared`: files hold one of the two names
        for a, b in (
            ("shared.weight", "encoder.embed_tokens.weight"),
            ("encoder.embed_tokens.weight", "shared.weight"),
        ):
            if a in expected and a not in names and b in names:
                names[a] = names[b]
        missing = [prefix + file_key(k) for k in expected if file_key(k) not in names]
        if missing:
            raise ModelUnavailable(
                f"{path} is not a complete {part}: {len(missing)} of its tensors are missing, e.g. "
                f"{', '.join(missing[:3])}"
            )
        scaled = SCALED_FP8_MARKER in names
        state = {}
        for key, param in expected.items():
            name = file_key(key)
            value = handle.get_tensor(names[name])
            scale_key = name.removesuffix(".weight") + ".scale_weight"
            if name.endswith(".weight") and scale_key in names and (scaled or value.dtype.itemsize == 1):
                value = value.to(torch.float32) * handle.get_tensor(names[scale_key]).to(torch.float32)
            if value.numel() == param.numel() and value.shape != param.shape:
                value = value.reshape(param.shape)  # the autoencoder's attention: 1x1 convolutions in BFL's file
            if value.shape != param.shape:
                raise ModelUnavailable(
                    f"{path}: {name} has shape {tuple(value.shape)}, the {part} needs {tuple(param.shape)}"
                )
            wanted = torch.float32 if any(f".{m}." in f".{key}" for m in keep_fp32) else dtype
            state[key] = value.to(wanted)
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def _prefix(keys: list[str], wanted: list[str]) -> str:
    """The prefix the file puts before the names (ComfyUI's saved checkpoints nest them), found from one name."""
    probe = next((w for w in wanted if not w.endswith("position_ids")), wanted[0])
    for key in keys:
        if key.endswith(probe):
            return key[: len(key) - len(probe)]
    return ""


def _tokenizers(files: ComponentFiles, is_tiny: bool):
    if is_tiny:
        return tiny.tiny_clip_tokenizer(), tiny.tiny_t5_tokenizer()
    roots = [files.search_root, *files.search_root.parents[:2]] if files.search_root else []
    clip = t5 = None
    for root in roots:  # a ComfyUI install: comfy/ beside models/
        clip = clip or _clip_tokenizer(root / "comfy" / "sd1_tokenizer")
        t5 = t5 or _t5_tokenizer(root / "comfy" / "text_encoders" / "t5_tokenizer")
    cached = _hub_cache_folder()
    if cached is not None:
        clip = clip or _clip_tokenizer(cached / "tokenizer")
        t5 = t5 or _t5_tokenizer(cached / "tokenizer_2")
    if clip is None or t5 is None:
        missing = " and ".join(name for name, found in (("CLIP-L's", clip), ("T5's", t5)) if found is None)
        raise ModelUnavailable(
            f"--components: ComfyUI's component files hold no tokenizers, and {missing} were found nowhere: neither "
            "in a ComfyUI install around the folder given (comfy/sd1_tokenizer/ with vocab.json and merges.txt, "
            "comfy/text_encoders/t5_tokenizer/ with tokenizer.json, beside models/) nor in the local hub cache of "
            f"{DEFAULT_MODEL} (tokenizer/, tokenizer_2/)"
        )
    return clip, t5


def _clip_tokenizer(folder: Path) -> CLIPTokenizer | None:
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return None


def _t5_tokenizer(folder: Path) -> T5TokenizerFast | None:
    if (folder / "tokenizer.json").is_file():
        return T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), model_max_length=512, extra_ids=0)
    if (folder / "spiece.model").is_file():
        return T5TokenizerFast(vocab_file=str(folder / "spiece.model"), model_max_length=512)
    return None


def _hub_cache_folder() -> Path | None:
    """The local hub cache's snapshot of FLUX.1 Kontext [dev], if one is there (nothing is downloaded). Files are
    looked for by name: transformers' from_pretrained would hand back an empty tokenizer for missing ones."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(DEFAULT_MODEL, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None
