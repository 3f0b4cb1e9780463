"""Weights in a smaller precision, chosen once at load: fp8, int8 or NF4, through torchao and bitsandbytes.

Two ways in, one result (the loaded module quantized in place, one copy of it in memory):
- a diffusers folder or hub repo is quantized while it loads, through diffusers' and transformers' own
  quantization configs (`pipeline_quantization`): the full-precision weights never exist whole;
- the tiny model and single files are quantized module by module as they are built (`quantize_module`).

What each precision is:
- fp8: on GPUs with fp8 tensor cores (compute capability 8.9+), torchao's fp8 dynamic activation + fp8
  weight (fp8 matmuls); elsewhere (older GPUs, the CPU) fp8 weight-only storage, computed in the model dtype.
- int8: torchao's int8 weight-only, on any device (the CPU included).
- nf4: bitsandbytes' 4-bit NormalFloat, computed in the model dtype.
Every linear layer is quantized but the transformer's input embedders and its last modulation (small,
and where the error would reach every token): they keep the model dtype. The blocks hold over 99% of
the weights.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from ..schema import ModelUnavailable

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "none", "fp8", "int8", "nf4")
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have fp8 tensor cores
# Module paths (diffusers' FluxTransformer2DModel) that keep the model dtype; the same list goes to the libraries.
TRANSFORMER_KEEP = ("x_embedder", "context_embedder", "time_text_embed", "norm_out")
TEXT_ENCODER_KEEP = ("shared",)  # T5's embedding (not a linear layer; named for the libraries' configs)
NF4_BLOCK = 64  # bitsandbytes' NF4 block: one fp32 scale per 64 weights


def check_precision(value: str, flag: str = "--quantize") -> str:
    if value not in PRECISIONS:
        raise ValueError(f"{flag} must be one of {', '.join(PRECISIONS)} (got {value!r})")
    return value


def has_fp8_compute(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def quantizes(name: str, keep: tuple[str, ...] = TRANSFORMER_KEEP) -> bool:
    """Whether the linear layer at `name` (a module path) is quantized."""
    return not any(name == part or name.startswith(part + ".") for part in keep)


def _require(package: str, precision: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ModelUnavailable(f"--quantize {precision} needs the {package} package (pip install {package})")


def torchao_config(precision: str, device: torch.device):
    """The torchao config for fp8 or int8 on `device`."""
    _require("torchao", precision)
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        Int8WeightOnlyConfig,
    )

    if precision == "int8":
        return Int8WeightOnlyConfig()
    if precision == "fp8":
        return Float8DynamicActivationFloat8WeightConfig() if has_fp8_compute(device) else Float8WeightOnlyConfig()
    raise ValueError(f"no torchao config for {precision}")


def describe(precision: str, device: torch.device) -> str:
    """What `precision` means on `device`, for the load log."""
    if precision == "fp8":
        return "fp8 matmuls" if has_fp8_compute(device) else "fp8 weights, computed in the model dtype"
    return {"int8": "int8 weights", "nf4": "NF4 4-bit weights", "none": "the model dtype"}[precision]


def quantize_module(
    module: torch.nn.Module,
    precision: str,
    device: torch.device,
    dtype: torch.dtype,
    keep: tuple[str, ...] = TRANSFORMER_KEEP,
) -> int:
    """Quantize, in place, every linear layer of `module` outside `keep`; return how many were."""
    if precision == "none":
        return 0
    linears = [
        (name, child)
        for name, child in module.named_modules()
        if type(child) is torch.nn.Linear and quantizes(name, keep)
    ]
    for name, linear in linears:
        quantize_linear(module, name, linear, precision, device, dtype)
    return len(linears)


def quantize_linear(
    root: torch.nn.Module, name: str, linear: torch.nn.Linear, precision: str, device: torch.device, dtype
) -> None:
    """Quantize one linear layer of `root` (at path `name`) in place: torchao swaps its weight, NF4 the layer."""
    if precision == "nf4":
        parent_name, _, child_name = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child_name, _nf4_linear(linear, device, dtype))
        return
    from torchao.quantization import quantize_

    quantize_(linear, torchao_config(precision, device))


def _nf4_linear(linear: torch.nn.Linear, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    _require("bitsandbytes", "nf4")
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=dtype,
        quant_type="nf4",
        device="meta",
    )
    weight = linear.weight.detach().to(dtype)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", blocksize=NF4_BLOCK)
    if linear.bias is not None:
        layer.bias = torch.nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
    # Params4bit quantizes when it moves to a device: the CPU too in bitsandbytes 0.45+.
    return layer.to(device if device.type != "mps" else "cpu")


def pipeline_quantization(transformer: str, text_encoder: str, device: torch.device, dtype: torch.dtype):
    """diffusers' PipelineQuantizationConfig for FluxKontextPipeline.from_pretrained, or None when nothing is
    quantized: each component is quantized layer by layer while it loads."""
    mapping = {}
    if transformer != "none":
        mapping["transformer"] = _library_config("diffusers", transformer, device, dtype)
    if text_encoder != "none":
        mapping["text_encoder_2"] = _library_config("transformers", text_encoder, device, dtype)
    if not mapping:
        return None
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_mapping=mapping)


def _library_config(library: str, precision: str, device: torch.device, dtype: torch.dtype):
    """diffusers' or transformers' TorchAoConfig (fp8, int8) or BitsAndBytesConfig (nf4), limited to the blocks."""
    if library == "diffusers":
        from diffusers import BitsAndBytesConfig, TorchAoConfig

        keep = list(TRANSFORMER_KEEP)
    else:
        from transformers import BitsAndBytesConfig, TorchAoConfig

        keep = list(TEXT_ENCODER_KEEP)
    if precision == "nf4":
        _require("bitsandbytes", precision)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=keep,
        )
    return TorchAoConfig(torchao_config(precision, device), modules_to_not_convert=keep)


def nf4_needs_cuda_at_load(device: torch.device) -> bool:
    """diffusers' and transformers' bitsandbytes loaders refuse to run without a GPU."""
    return device.type != "cuda"
