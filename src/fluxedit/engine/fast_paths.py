"""The GPU-only speed-ups: fp8 linear layers (torchao), regional torch.compile, faster attention kernels.

Each one is used where the hardware and the installed packages allow it; where
they do not, the engine runs without it and says so in the prediction's logs.
"""

from __future__ import annotations

import copy
import importlib.util
import logging

import torch

log = logging.getLogger(__name__)
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have fp8 tensor cores
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


class FastTransformer:
    """Builds, once, the transformer the `high` level runs: an fp8 copy, compiled by repeated blocks."""

    def __init__(self, transformer: torch.nn.Module, device: torch.device):
        self.base = transformer
        self.device = device
        self.model: torch.nn.Module | None = None
        self.notes: list[str] = []
        self._built = False

    def get(self) -> tuple[torch.nn.Module, list[str]]:
        if not self._built:
            self._build()
        return (self.model or self.base), self.notes

    def _build(self) -> None:
        self._built = True
        if self.device.type != "cuda":
            self.notes = [
                f"acceleration high: fp8 and torch.compile need a CUDA GPU; on {self.device.type} this edit used "
                "step caching only"
            ]
            return
        model = self.base
        capability = torch.cuda.get_device_capability(self.device)
        if capability < FP8_MIN_CAPABILITY:
            self.notes.append(f"acceleration high: this GPU (compute capability {capability}) has no fp8; bf16 used")
        elif importlib.util.find_spec("torchao") is None:
            self.notes.append("acceleration high: torchao is not installed (pip install torchao); bf16 used")
        else:
            model = self._fp8_copy() or model
        try:
            model.compile_repeated_blocks(fullgraph=True)
        except Exception as error:  # compile support varies with the torch build; eager still works
            self.notes.append(f"acceleration high: torch.compile unavailable ({type(error).__name__}); eager used")
        self.model = model

    def _fp8_copy(self) -> torch.nn.Module | None:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

        needed = sum(p.numel() * p.element_size() for p in self.base.parameters())
        free, _ = torch.cuda.mem_get_info(self.device)
        if free < needed * 1.1:
            self.notes.append("acceleration high: not enough free GPU memory for an fp8 copy; bf16 used")
            return None
        fast = copy.deepcopy(self.base)
        quantize_(fast, Float8DynamicActivationFloat8WeightConfig())
        return fast
