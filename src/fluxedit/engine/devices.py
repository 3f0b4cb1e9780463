"""Choose the device, the dtype and how the model is placed in memory.

Memory modes, from fastest to leanest (docs/engine.md has the table for the
real model):
- gpu: every component lives on the accelerator.
- model-offload: components wait in CPU memory and move to the GPU one at a
  time while used (the transformer is the largest and must fit).
- group-offload: the transformer streams to the GPU block group by group,
  overlapped with compute by CUDA streams.
- sequential-offload: layer by layer; slowest, fits almost any GPU.
On CPU or Apple MPS everything simply lives on that device ("gpu" mode there
means "on the device").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MEMORY_MODES = ("auto", "gpu", "model-offload", "group-offload", "sequential-offload")
DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GIB = 1024**3
# Room for activations, the attention of ~9k tokens and the VAE decode at ~1 MP.
ACTIVATION_HEADROOM = 4 * GIB
# Two transformer blocks in flight plus activations, for group offload.
GROUP_OFFLOAD_MINIMUM = 6 * GIB


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    memory_mode: str


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for, but no CUDA GPU is available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {requested!r} was asked for, but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {requested!r})")
    if DTYPES[requested] is not None:
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "mps":
        return torch.bfloat16 if torch.backends.mps.is_macos_or_newer(14, 0) else torch.float16
    return torch.float32  # CPU bf16 matmuls are slow or missing on many processors


def pick_memory_mode(free_bytes: int, total_weight_bytes: int, largest_component_bytes: int) -> str:
    """The fastest memory mode that fits `free_bytes` of accelerator memory."""
    if free_bytes >= total_weight_bytes + ACTIVATION_HEADROOM:
        return "gpu"
    if free_bytes >= largest_component_bytes + ACTIVATION_HEADROOM:
        return "model-offload"
    if free_bytes >= GROUP_OFFLOAD_MINIMUM:
        return "group-offload"
    return "sequential-offload"


def resolve_placement(device: str, dtype: str, memory_mode: str, component_bytes: dict[str, int]) -> Placement:
    """Device, dtype and memory mode for components of the given sizes (at the target dtype)."""
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)} (got {memory_mode!r})")
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(chosen_device, dtype)
    if chosen_device.type != "cuda":
        return Placement(chosen_device, chosen_dtype, "gpu")
    if memory_mode == "auto":
        free, _ = torch.cuda.mem_get_info(chosen_device)
        memory_mode = pick_memory_mode(free, sum(component_bytes.values()), max(component_bytes.values()))
    return Placement(chosen_device, chosen_dtype, memory_mode)
