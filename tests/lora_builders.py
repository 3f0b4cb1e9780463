"""Tiny LoRAs for the tiny model, each in one trainer's own key layout, built from a seed."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

INNER = 32  # the tiny transformer's width (2 heads x 16)
MLP = 4 * INNER
RANK = 4


def _pair(generator, rows: int, cols: int, rank: int = RANK, strength: float = 0.5):
    down = torch.randn(rank, cols, generator=generator) * strength
    up = torch.randn(rows, rank, generator=generator) * strength
    return down, up


def diffusers_lora(seed: int = 0, strength: float = 0.5) -> dict[str, torch.Tensor]:
    """ai-toolkit / diffusers trainers: 'transformer.' + diffusers module names, lora_A/lora_B."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for block in ("transformer_blocks.0", "single_transformer_blocks.0"):
        for layer in ("attn.to_q", "attn.to_k", "attn.to_v"):
            down, up = _pair(g, INNER, INNER, strength=strength)
            state[f"transformer.{block}.{layer}.lora_A.weight"] = down
            state[f"transformer.{block}.{layer}.lora_B.weight"] = up
    down, up = _pair(g, INNER, INNER, strength=strength)
    state["transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight"] = down
    state["transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight"] = up
    return state


def summed_lora(first: dict, second: dict) -> dict[str, torch.Tensor]:
    """One LoRA whose update is the sum of two: ranks stacked, B [B1 B2] times A [A1; A2]."""
    total = {}
    for key in first:
        if key.endswith("lora_A.weight"):
            total[key] = torch.cat([first[key], second[key]], dim=0)
        else:
            total[key] = torch.cat([first[key], second[key]], dim=1)
    return total


def kohya_lora(seed: int = 1) -> dict[str, torch.Tensor]:
    """sd-scripts: lora_unet_<bfl name with underscores>.lora_down/lora_up/alpha (no single-block linear1:
    diffusers splits that one by the full model's widths)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    layers = {
        "double_blocks_0_img_attn_qkv": (3 * INNER, INNER),
        "double_blocks_0_img_attn_proj": (INNER, INNER),
        "double_blocks_0_txt_attn_qkv": (3 * INNER, INNER),
        "double_blocks_0_txt_attn_proj": (INNER, INNER),
        "single_blocks_0_linear2": (INNER, INNER + MLP),
    }
    for name, (rows, cols) in layers.items():
        down, up = _pair(g, rows, cols)
        state[f"lora_unet_{name}.lora_down.weight"] = down
        state[f"lora_unet_{name}.lora_up.weight"] = up
        state[f"lora_unet_{name}.alpha"] = torch.tensor(float(RANK))
    return state


def bfl_layout_lora(prefix: str, seed: int = 2) -> dict[str, torch.Tensor]:
    """BFL module names with PEFT matrices: prefix 'diffusion_model.' (ComfyUI) or 'base_model.model.' (fal)."""
    g = torch.Generator().manual_seed(seed)
    layers = {
        "double_blocks.0.img_attn.qkv": (3 * INNER, INNER),
        "double_blocks.0.img_attn.proj": (INNER, INNER),
        "double_blocks.0.txt_attn.qkv": (3 * INNER, INNER),
        "single_blocks.0.linear1": (3 * INNER + MLP, INNER),
        "single_blocks.0.linear2": (INNER, INNER + MLP),
    }
    state = {}
    for name, (rows, cols) in layers.items():
        down, up = _pair(g, rows, cols)
        state[f"{prefix}{name}.lora_A.weight"] = down
        state[f"{prefix}{name}.lora_B.weight"] = up
    return state


def xlabs_lora(seed: int = 3) -> dict[str, torch.Tensor]:
    """XLabs: double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for suffix, rows in (
        ("qkv_lora1", 3 * INNER),
        ("proj_lora1", INNER),
        ("qkv_lora2", 3 * INNER),
        ("proj_lora2", INNER),
    ):
        down, up = _pair(g, rows, INNER)
        state[f"double_blocks.0.processor.{suffix}.down.weight"] = down
        state[f"double_blocks.0.processor.{suffix}.up.weight"] = up
    return state


def sdxl_lora(seed: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA for another model: SDXL's UNet in kohya naming."""
    g = torch.Generator().manual_seed(seed)
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    down, up = _pair(g, 640, 640)
    return {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(4.0)}


def full_size_lora(seed: int = 5) -> dict[str, torch.Tensor]:
    """A FLUX LoRA for the full-size model: its shapes do not fit the tiny one."""
    g = torch.Generator().manual_seed(seed)
    down, up = _pair(g, 3072, 3072)
    return {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": down,
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": up,
    }


def write(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
