"""Recognise a FLUX LoRA's key layout and bring it to the layout diffusers loads.

diffusers converts kohya (`lora_unet_...`), XLabs and its own/PEFT layouts. LoRAs
in BFL's key layout (`diffusion_model.double_blocks...`, as ComfyUI saves them,
and `base_model.model.double_blocks...` from fal's Kontext trainer) are
converted here instead: diffusers' converter for them assumes the full-size
model's widths and block counts, while this one reads them from the model, so
the same code serves the real model and the tiny one.
"""

from __future__ import annotations

import torch

from .bfl_checkpoint import block_count, key_table

BFL_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.")
BFL_MARKERS = ("double_blocks.", "single_blocks.")
# PEFT names the two matrices lora_A/lora_B; kohya-style files lora_down/lora_up.
_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))


def lora_format(state_dict: dict[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    if any(k.startswith("lora_unet_") or k.startswith("lora_te") for k in keys):
        return "kohya"
    if any("processor" in k for k in keys):
        return "xlabs"
    if any(marker in k for k in keys for marker in BFL_MARKERS):
        return "fal" if any(k.startswith("base_model.model.") for k in keys) else "bfl"
    return "diffusers"


def bfl_lora_to_diffusers(state_dict: dict[str, torch.Tensor], inner_dim: int) -> dict[str, torch.Tensor]:
    """BFL-layout LoRA -> diffusers layout ("transformer." keys, lora_A/lora_B).

    A fused BFL layer (q,k,v or q,k,v,mlp in one matrix) shares one down matrix:
    each diffusers part gets a copy of it, and its rows of the up matrix.
    """
    source = {}
    alphas = {}
    for key, tensor in state_dict.items():
        for prefix in BFL_PREFIXES:
            if key.startswith(prefix):
                key = key.removeprefix(prefix)
                break
        if key.endswith(".alpha"):
            alphas[key.removesuffix(".alpha")] = float(tensor)
        else:
            source[key] = tensor
    num_double = block_count(source, "double_blocks.")
    num_single = block_count(source, "single_blocks.")
    converted: dict[str, torch.Tensor] = {}
    for bfl_stem, diffusers_stems in key_table(num_double, num_single):
        for down_suffix, up_suffix in _PAIRS:
            down = source.pop(bfl_stem + down_suffix, None)
            up = source.pop(bfl_stem + up_suffix, None)
            if down is None or up is None:
                continue
            if bfl_stem in alphas:  # kohya-style alpha: fold alpha/rank into the up matrix
                up = up * (alphas.pop(bfl_stem) / down.shape[0])
            sizes = [inner_dim] * 3 + ([up.shape[0] - 3 * inner_dim] if len(diffusers_stems) == 4 else [])
            parts = [up] if len(diffusers_stems) == 1 else torch.split(up, sizes, dim=0)
            for stem, part in zip(diffusers_stems, parts, strict=True):
                converted[f"transformer.{stem}.lora_A.weight"] = down.clone()
                converted[f"transformer.{stem}.lora_B.weight"] = part.contiguous()
    leftover = [k for k in source if "lora" in k]
    if leftover:
        raise ValueError(f"LoRA keys that match no FLUX layer: {leftover[:3]}")
    return converted


def diffusers_lora_to_bfl(state_dict: dict[str, torch.Tensor], out_features: dict[str, int]) -> dict[str, torch.Tensor]:
    """diffusers-layout LoRA -> BFL layout with ComfyUI's `diffusion_model.` prefix, exactly.

    Separate q, k, v (and MLP) LoRAs on a layer BFL fuses become one LoRA of the
    summed rank: the down matrices stacked, the up matrices block-diagonal (a
    part without a LoRA gets zero rows of its width, from `out_features`).
    """
    source = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    num_double = block_count(source, "transformer_blocks.")
    num_single = block_count(source, "single_transformer_blocks.")
    converted: dict[str, torch.Tensor] = {}
    for bfl_stem, diffusers_stems in key_table(num_double, num_single):
        present = [stem for stem in diffusers_stems if f"{stem}.lora_A.weight" in source]
        if not present:
            continue
        downs = [source.pop(f"{stem}.lora_A.weight") for stem in present]
        ups = {stem: source.pop(f"{stem}.lora_B.weight") for stem in present}
        rank_total = sum(down.shape[0] for down in downs)
        blocks, offset = [], 0
        for stem in diffusers_stems:
            if stem in ups:
                up = ups[stem]
                block = torch.zeros(up.shape[0], rank_total, dtype=up.dtype)
                block[:, offset : offset + up.shape[1]] = up
                offset += up.shape[1]
            else:
                block = torch.zeros(out_features[stem], rank_total, dtype=downs[0].dtype)
            blocks.append(block)
        converted[f"diffusion_model.{bfl_stem}.lora_A.weight"] = torch.cat(downs, dim=0)
        converted[f"diffusion_model.{bfl_stem}.lora_B.weight"] = torch.cat(blocks, dim=0)
    leftover = [k for k in source if "lora" in k]
    if leftover:
        raise ValueError(f"LoRA keys with no place in BFL's layout: {leftover[:3]}")
    return converted
