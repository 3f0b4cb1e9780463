"""The GPU-only speed-ups of the `high` level: regional torch.compile and faster attention kernels.

fp8 linear layers are a load-time choice (`--quantize fp8`, quantize.py), not a
copy made here: `high` runs the one loaded transformer, quantized or not, with
its adapters. Each speed-up is used where the hardware and the installed
packages allow it; where they do not, the engine runs without it and says so
in the prediction's logs.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from .quantize import FP8_MIN_CAPABILITY  # noqa: F401  (tests/engine/test_gpu.py reads it from here)

log = logging.getLogger(__name__)
# Attention kernels in order of preference, by the module that provides them.
ATTENTION_BACKENDS = (("flash_attn_interface", "_flash_3"), ("sageattention", "sage"), ("flash_attn", "flash"))


def pick_attention_backend(requested: str, device: torch.device) -> str:
    """auto: FlashAttention 3, then SageAttention, then FlashAttention 2 when installed; else PyTorch SDPA."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "native"
    for module, backend in ATTENTION_BACKENDS:
        if importlib.util.find_spec(module) is not None:
            return backend
    return "native"


def apply_attention_backend(transformer: torch.nn.Module, backend: str) -> None:
    if backend != "native":
        transformer.set_attention_backend(backend)


def compiles(device: torch.device) -> bool:
    """Whether `high` compiles the transformer here: on CUDA only. The engine then hotswaps LoRAs (loras.py)."""
    return device.type == "cuda"


class FastTransformer:
    """The transformer the `high` level runs: the loaded one itself (never a copy), compiled by repeated blocks
    once, on CUDA. LoRAs stay valid: the engine's adapters live on this very module, hotswapped into fixed slots
    prepared before the first adapter loaded (LoraManager), so switching them never recompiles. The blocks are
    compiled with dynamic shapes: the 17 Kontext sizes (and the reference's tokens) change the sequence length,
    which then is a symbol in one graph instead of a recompilation per size."""

    def __init__(self, transformer: torch.nn.Module, device: torch.device):
        self.base = transformer
        self.device = device
        self.notes: list[str] = []
        self._built = False

    @property
    def model(self) -> torch.nn.Module:
        return self.base

    def get(self) -> tuple[torch.nn.Module, list[str]]:
        if not self._built:
            self._build()
        return self.base, self.notes

    def _build(self) -> None:
        self._built = True
        if not compiles(self.device):
            self.notes = [
                f"acceleration high: fp8 and torch.compile need a CUDA GPU; on {self.device.type} this edit used "
                "step caching only"
            ]
            return
        if not _has_fp8_weights(self.base):
            self.notes.append("acceleration high: the transformer is not fp8 (load it with --quantize fp8 for fp8)")
        try:
            # Compiled in place: the module keeps its identity, its adapters and their switching.
            self.base.compile_repeated_blocks(fullgraph=True, dynamic=True)
        except Exception as error:  # compile support varies with the torch build; eager still works
            self.notes.append(f"acceleration high: torch.compile unavailable ({type(error).__name__}); eager used")


def _has_fp8_weights(module: torch.nn.Module) -> bool:
    for param in module.parameters():
        inner = getattr(param, "qdata", param)  # torchao's Float8Tensor keeps its fp8 data in qdata
        if inner.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            return True
    return False
