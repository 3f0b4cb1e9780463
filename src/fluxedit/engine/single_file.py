"""A FLUX transformer built from one BFL-layout safetensors file, one tensor at a time.

The file is memory-mapped (safetensors' safe_open) and each diffusers tensor is read as its slice of
the BFL tensor it lies in, so no whole copy of the file is ever held in CPU memory. Each linear layer is
quantized (quantize.py) as soon as its weights are in, so the full-precision transformer never exists
whole either. The files read:
- BFL's `flux1-kontext-dev.safetensors` (bf16), also under ComfyUI's `model.diffusion_model.` prefix
  (a full ComfyUI checkpoint's VAE and text encoder keys are ignored);
- ComfyUI's fp8 files: float8_e4m3fn (or e5m2) weights, and the "fp8_scaled" ones, whose weights come
  with a per-tensor `scale_weight` (real weight = fp8 weight x scale) and a `scaled_fp8` marker tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import init_empty_weights
from diffusers import FluxTransformer2DModel
from safetensors import safe_open

from ..schema import ModelUnavailable
from .bfl_checkpoint import COMFY_PREFIX, bfl_pieces, swap_halves
from .quantize import quantize_linear, quantizes

SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIX = ".scale_weight"
INPUT_SCALE_SUFFIX = ".scale_input"  # fp8_scaled files' activation scales: unused (we compute in bf16 or fp8 dynamic)
FP8_NAMES = ("F8_E4M3", "F8_E5M2")  # safetensors' names of the fp8 dtypes


@dataclass(frozen=True)
class FileSummary:
    fp8: bool  # its weights are fp8
    scaled: bool  # ComfyUI's fp8_scaled: per-tensor scales


class BflSafetensors:
    """A memory-mapped BFL transformer file that hands out diffusers tensors one by one."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.handle = safe_open(path, framework="pt")
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise ModelUnavailable(f"{path} is not a readable safetensors file: {error}") from None
        keys = list(self.handle.keys())
        prefix = COMFY_PREFIX if any(k.startswith(COMFY_PREFIX) for k in keys) else ""
        names = {k.removeprefix(prefix): k for k in keys if k.startswith(prefix)}
        self.scaled = names.pop(SCALED_FP8_MARKER, None) is not None
        self.scales = {n.removesuffix(SCALE_SUFFIX): names.pop(n) for n in list(names) if n.endswith(SCALE_SUFFIX)}
        for name in [n for n in names if n.endswith(INPUT_SCALE_SUFFIX)]:
            names.pop(name)
        self.names = names
        slices = {name: self.handle.get_slice(key) for name, key in names.items()}
        try:
            self.pieces = bfl_pieces({name: tuple(s.get_shape()) for name, s in slices.items()})
        except ValueError as error:
            raise ModelUnavailable(f"{path} is not a FLUX transformer checkpoint: {error}") from None
        self.summary = FileSummary(any(s.get_dtype() in FP8_NAMES for s in slices.values()), self.scaled)

    def tensor(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        """The diffusers tensor `key` in `dtype`: its rows of the BFL tensor, dequantized with its scale."""
        bfl_key, start, stop, swapped = self.pieces[key]
        part = self.handle.get_slice(self.names[bfl_key])[start:stop]
        stem = bfl_key.removesuffix(".weight")
        if bfl_key.endswith(".weight") and stem in self.scales:
            scale = self.handle.get_tensor(self.scales[stem]).to(torch.float32)
            part = part.to(torch.float32) * scale
        part = part.to(dtype)
        return swap_halves(part) if swapped else part


def build_transformer(
    config: dict, source: BflSafetensors, precision: str, device: torch.device, dtype: torch.dtype
) -> FluxTransformer2DModel:
    """The transformer `config` describes, its weights read from `source` layer by layer and each linear layer
    quantized to `precision` (on `device` when that is a GPU) right after it is filled."""
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    expected = set(model.state_dict())
    missing, extra = expected - set(source.pieces), set(source.pieces) - expected
    if missing or extra:
        raise ModelUnavailable(
            f"{source.path} does not fit the transformer of the components: "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
        )
    quantize_on = device if device.type == "cuda" else torch.device("cpu")
    for name, module in list(model.named_modules()):
        for param_name, param in list(module.named_parameters(recurse=False)):
            key = f"{name}.{param_name}" if name else param_name
            value = source.tensor(key, dtype)
            if value.shape != param.shape:
                raise ModelUnavailable(
                    f"{source.path}: {key} has shape {tuple(value.shape)}, the model needs {tuple(param.shape)}"
                )
            module._parameters[param_name] = torch.nn.Parameter(value, requires_grad=False)
        if type(module) is torch.nn.Linear and precision != "none" and quantizes(name):
            quantize_linear(model, name, module, precision, quantize_on, dtype)
    return model.eval()
