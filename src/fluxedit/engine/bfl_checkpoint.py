"""Convert FLUX transformer weights between BFL's single-file layout and diffusers'.

BFL's `flux1-kontext-dev.safetensors` (the file ComfyUI users have) fuses q/k/v
and, in single blocks, q/k/v/mlp into one matrix. diffusers ships a converter,
but it assumes the full-size width (3072) when splitting the single blocks, so
it cannot load a smaller model of the same family. This one reads every width
from the tensors themselves, and works in both directions from one key table.
"""

from __future__ import annotations

import torch

COMFY_PREFIX = "model.diffusion_model."

# (BFL key stem, diffusers key stems): a single stem is a rename; several are
# concatenated along dim 0 in the BFL file.
_GLOBAL = [
    ("time_in.in_layer", ["time_text_embed.timestep_embedder.linear_1"]),
    ("time_in.out_layer", ["time_text_embed.timestep_embedder.linear_2"]),
    ("vector_in.in_layer", ["time_text_embed.text_embedder.linear_1"]),
    ("vector_in.out_layer", ["time_text_embed.text_embedder.linear_2"]),
    ("guidance_in.in_layer", ["time_text_embed.guidance_embedder.linear_1"]),
    ("guidance_in.out_layer", ["time_text_embed.guidance_embedder.linear_2"]),
    ("txt_in", ["context_embedder"]),
    ("img_in", ["x_embedder"]),
    ("final_layer.linear", ["proj_out"]),
]
_DOUBLE = [
    ("img_mod.lin", ["norm1.linear"]),
    ("txt_mod.lin", ["norm1_context.linear"]),
    ("img_attn.qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    ("txt_attn.qkv", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
    ("img_attn.proj", ["attn.to_out.0"]),
    ("txt_attn.proj", ["attn.to_add_out"]),
    ("img_mlp.0", ["ff.net.0.proj"]),
    ("img_mlp.2", ["ff.net.2"]),
    ("txt_mlp.0", ["ff_context.net.0.proj"]),
    ("txt_mlp.2", ["ff_context.net.2"]),
]
_DOUBLE_NORMS = [
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
]
_SINGLE = [
    ("modulation.lin", ["norm.linear"]),
    ("linear1", ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]),
    ("linear2", ["proj_out"]),
]
_SINGLE_NORMS = [
    ("norm.query_norm.scale", "attn.norm_q.weight"),
    ("norm.key_norm.scale", "attn.norm_k.weight"),
]
# BFL's final modulation is (shift, scale); diffusers' AdaLayerNormContinuous is (scale, shift).
_SWAPPED = ("final_layer.adaLN_modulation.1", "norm_out.linear")


def block_count(keys, prefix: str) -> int:
    """How many numbered blocks (`prefix`N.) the keys name."""
    indices = {int(k.split(".")[1]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def key_table(num_double: int, num_single: int) -> list[tuple[str, list[str]]]:
    """Every (BFL stem, diffusers stems) pair; norm entries are full keys."""
    table = list(_GLOBAL)
    for i in range(num_double):
        table += [(f"double_blocks.{i}.{b}", [f"transformer_blocks.{i}.{d}" for d in ds]) for b, ds in _DOUBLE]
        table += [(f"double_blocks.{i}.{b}", [f"transformer_blocks.{i}.{d}"]) for b, d in _DOUBLE_NORMS]
    for i in range(num_single):
        table += [(f"single_blocks.{i}.{b}", [f"single_transformer_blocks.{i}.{d}" for d in ds]) for b, ds in _SINGLE]
        table += [(f"single_blocks.{i}.{b}", [f"single_transformer_blocks.{i}.{d}"]) for b, d in _SINGLE_NORMS]
    return table


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _expand(stem: str) -> list[tuple[str, str]]:
    """(suffix for the BFL key, suffix for the diffusers key) for a stem's tensors."""
    if stem.endswith(".scale") or stem.endswith(".weight"):
        return [("", "")]
    return [(".weight", ".weight"), (".bias", ".bias")]


def bfl_to_diffusers(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a BFL (or ComfyUI-prefixed) transformer state dict to diffusers keys."""
    source = {k.removeprefix(COMFY_PREFIX): v for k, v in checkpoint.items()}
    if "img_in.weight" not in source:
        raise ValueError("not a FLUX transformer checkpoint in BFL layout (no img_in.weight)")
    inner = source["img_in.weight"].shape[0]
    num_double = block_count(source, "double_blocks.")
    num_single = block_count(source, "single_blocks.")
    result: dict[str, torch.Tensor] = {}
    for bfl_stem, diffusers_stems in key_table(num_double, num_single):
        for bfl_suffix, diffusers_suffix in _expand(bfl_stem):
            key = bfl_stem + bfl_suffix
            if key not in source:
                continue  # e.g. no guidance_in in a guidance-free model
            tensor = source.pop(key)
            if len(diffusers_stems) == 1:
                result[diffusers_stems[0] + diffusers_suffix] = tensor
                continue
            # q, k, v are `inner` wide each; a fourth part (the single-block MLP) takes the rest.
            sizes = [inner] * 3 + ([tensor.shape[0] - 3 * inner] if len(diffusers_stems) == 4 else [])
            for stem, part in zip(diffusers_stems, torch.split(tensor, sizes, dim=0), strict=True):
                result[stem + diffusers_suffix] = part
    for suffix in (".weight", ".bias"):
        result[_SWAPPED[1] + suffix] = _swap_halves(source.pop(_SWAPPED[0] + suffix))
    if source:
        raise ValueError(f"unexpected keys in BFL checkpoint: {sorted(source)[:5]}")
    return result


def diffusers_to_bfl(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a diffusers FluxTransformer2DModel state dict to BFL's single-file layout."""
    source = dict(state_dict)
    num_double = block_count(source, "transformer_blocks.")
    num_single = block_count(source, "single_transformer_blocks.")
    result: dict[str, torch.Tensor] = {}
    for bfl_stem, diffusers_stems in key_table(num_double, num_single):
        for bfl_suffix, diffusers_suffix in _expand(bfl_stem):
            keys = [stem + diffusers_suffix for stem in diffusers_stems]
            if not all(k in source for k in keys):
                continue
            result[bfl_stem + bfl_suffix] = torch.cat([source.pop(k) for k in keys], dim=0)
    for suffix in (".weight", ".bias"):
        result[_SWAPPED[0] + suffix] = _swap_halves(source.pop(_SWAPPED[1] + suffix))
    if source:
        raise ValueError(f"unexpected keys in diffusers state dict: {sorted(source)[:5]}")
    return result


def bfl_pieces(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, int, int, bool]]:
    """Where each diffusers tensor lies in a BFL file, from its tensors' shapes alone (prefix already removed):
    diffusers key -> (BFL key, first row, end row, halves swapped). Lets a file be read tensor by tensor."""
    if "img_in.weight" not in shapes:
        raise ValueError("not a FLUX transformer checkpoint in BFL layout (no img_in.weight)")
    inner = shapes["img_in.weight"][0]
    left = set(shapes)
    pieces: dict[str, tuple[str, int, int, bool]] = {}
    table = key_table(block_count(shapes, "double_blocks."), block_count(shapes, "single_blocks."))
    for bfl_stem, diffusers_stems in table:
        for bfl_suffix, diffusers_suffix in _expand(bfl_stem):
            key = bfl_stem + bfl_suffix
            if key not in left:
                continue
            left.discard(key)
            rows = shapes[key][0]
            sizes = [rows] if len(diffusers_stems) == 1 else [inner] * 3
            if len(diffusers_stems) == 4:
                sizes.append(rows - 3 * inner)
            start = 0
            for stem, size in zip(diffusers_stems, sizes, strict=True):
                pieces[stem + diffusers_suffix] = (key, start, start + size, False)
                start += size
    for suffix in (".weight", ".bias"):
        key = _SWAPPED[0] + suffix
        if key not in left:
            raise ValueError(f"not a complete FLUX transformer checkpoint (no {key})")
        left.discard(key)
        pieces[_SWAPPED[1] + suffix] = (key, 0, shapes[key][0], True)
    if left:
        raise ValueError(f"unexpected keys in BFL checkpoint: {sorted(left)[:5]}")
    return pieces


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """BFL's (shift, scale) final modulation as diffusers' (scale, shift), and back."""
    return _swap_halves(tensor)
