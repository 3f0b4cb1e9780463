"""Load the FLUX.1 Kontext components from any source and place them in memory.

The components are held in a diffusers `FluxKontextPipeline` object because it
is a convenient, well-tested container (loading, offload hooks); the edit
itself runs in our own loop (denoise.py), not in the pipeline's __call__.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from ..schema import ModelUnavailable
from .comfy_components import comfy_component_files, load_comfy_pipeline
from .devices import Placement, pick_device, pick_dtype, resolve_placement
from .gguf_file import load_gguf_transformer
from .hub_access import check_hub_access
from .precision_choice import PrecisionChoice, choose_precision
from .quantize import (
    TEXT_ENCODER_KEEP,
    check_precision,
    describe,
    has_fp8_compute,
    nf4_needs_cuda_at_load,
    pipeline_quantization,
    quantize_module,
)
from .single_file import BflSafetensors, build_transformer
from .sources import DEFAULT_MODEL, ModelSource, SourceKind, classify_source, require_components
from .tiny import build_tiny_pipeline

log = logging.getLogger(__name__)
# Their per-load chatter (progress bars, optional-backend notices) is not for our users.
diffusers_logging.set_verbosity_error()
transformers_logging.set_verbosity_error()
COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


@dataclass
class LoadedModel:
    pipe: FluxKontextPipeline
    source: ModelSource
    placement: Placement
    precision: PrecisionChoice | None = None  # what the transformer and T5 were quantized to (None: not chosen here)


@dataclass(frozen=True)
class _Target:
    """Where the weights go and in what precision: decided before anything loads."""

    device: torch.device
    dtype: torch.dtype
    precision: PrecisionChoice


def load_model(
    model: str = DEFAULT_MODEL,
    components: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    memory_mode: str = "auto",
    token: str | None = None,
    text_encoder_device: str = "auto",
    quantize: str = "auto",
    text_encoder_quantize: str = "auto",
) -> LoadedModel:
    """Load `model` (and, for a single file, the rest from `components`: required then) and place it.

    text_encoder_device="cpu" keeps T5-XXL (9.5 GB in bf16) in CPU memory: slower prompts (the engine
    remembers recent ones), 9.5 GB more room on the GPU. quantize / text_encoder_quantize: auto, none, fp8,
    int8 or nf4 for the transformer / T5 (quantize.py), applied once, while loading."""
    check_precision(quantize)
    check_precision(text_encoder_quantize, "--text-encoder-quantize")
    source = classify_source(model)
    require_components(source, components)  # before any download or hub search
    if source.kind is SourceKind.gguf and quantize not in ("auto", "none"):
        raise ModelUnavailable(
            f"{source.location} is a GGUF file, quantized already: --quantize {quantize} does not apply to it "
            "(leave it at auto)"
        )
    # The dtype and the precision depend on the device only, so decide them before loading anything.
    target = _target(source, device, dtype, quantize, text_encoder_quantize, text_encoder_device == "cpu")
    pipe = _load_pipeline(source, components, target, token)
    pipe.set_progress_bar_config(disable=True)
    t5_on_cpu = text_encoder_device == "cpu"
    sizes = {name: _weight_bytes(getattr(pipe, name)) for name in COMPONENTS}
    if t5_on_cpu:
        sizes.pop("text_encoder_2")
    placement = resolve_placement(device, dtype, memory_mode, sizes)
    _place(pipe, placement)
    if t5_on_cpu and placement.memory_mode == "gpu":
        # encode_prompt runs T5 where it is and moves the embeddings; the offload modes already keep
        # T5 in CPU memory between prompts.
        pipe.text_encoder_2.to("cpu")
    log.info(
        "loaded %s on %s (%s, %s; transformer: %s, T5: %s)",
        source,
        placement.device,
        placement.dtype,
        placement.memory_mode,
        describe(target.precision.transformer, target.device),
        describe(target.precision.text_encoder, target.device),
    )
    return LoadedModel(pipe, source, placement, target.precision)


def _target(source: ModelSource, device: str, dtype: str, quantize: str, text: str, t5_on_cpu: bool) -> _Target:
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(chosen_device, dtype)
    if source.kind is SourceKind.gguf:
        quantize = "none"  # the file's own quantization
    elif source.kind is SourceKind.single_file and quantize == "auto" and BflSafetensors(source.location).summary.fp8:
        quantize = "fp8"  # an fp8 file (ComfyUI's) stays fp8: upcasting it would double its memory
        log.warning("precision auto: %s holds fp8 weights; the transformer stays fp8", source.location)
    free = torch.cuda.mem_get_info(chosen_device)[0] if chosen_device.type == "cuda" else None
    counts = {}
    if source.kind is SourceKind.tiny:  # the real model's counts are the defaults
        counts = {"transformer": (0, 0), "t5": (0, 0), "others_bytes": 0}
    if t5_on_cpu:
        counts["t5"] = None
    fp8 = chosen_device.type == "cuda" and has_fp8_compute(chosen_device)
    choice = choose_precision(quantize, text, free, fp8, **counts)
    if quantize == "auto" or text == "auto":
        # Printed as the memory modes' choice is: the user sees what auto did and why.
        log.warning(
            "precision auto: transformer %s, T5 %s (%s)", choice.transformer, choice.text_encoder, choice.reason
        )
    return _Target(chosen_device, chosen_dtype, choice)


def _load_pipeline(source: ModelSource, components: str | None, target: _Target, token: str | None):
    dtype, precision = target.dtype, target.precision
    if source.kind is SourceKind.tiny:
        pipe = build_tiny_pipeline().to(dtype)
        _quantize_in_place(pipe, target, transformer=True, text_encoder=True)
        return pipe
    if source.kind in (SourceKind.folder, SourceKind.hub):
        if source.kind is SourceKind.hub:
            check_hub_access(source.location, token)
        kwargs = {"local_files_only": True} if source.kind is SourceKind.folder else {"token": token}
        config, later = _load_time_quantization(target, precision.transformer)
        pipe = _from_pretrained(source.location, dtype, quantization_config=config, **kwargs)
        _quantize_in_place(pipe, target, transformer="transformer" in later, text_encoder="text_encoder_2" in later)
        return pipe
    return _load_single_file(source, components, target, token)


def _load_time_quantization(target: _Target, transformer: str):
    """diffusers' config quantizing while loading, and which components are left to quantize after loading:
    the bitsandbytes loaders need a GPU, so NF4 on the CPU is applied in place instead."""
    later = set()
    text = target.precision.text_encoder
    if transformer == "nf4" and nf4_needs_cuda_at_load(target.device):
        transformer, later = "none", later | {"transformer"}
    if text == "nf4" and nf4_needs_cuda_at_load(target.device):
        text, later = "none", later | {"text_encoder_2"}
    return pipeline_quantization(transformer, text, target.device, target.dtype), later


def _quantize_in_place(pipe, target: _Target, transformer: bool, text_encoder: bool) -> None:
    quantize_on = target.device if target.device.type == "cuda" else torch.device("cpu")
    if transformer:
        quantize_module(pipe.transformer, target.precision.transformer, quantize_on, target.dtype)
    if text_encoder:
        quantize_module(
            pipe.text_encoder_2, target.precision.text_encoder, quantize_on, target.dtype, TEXT_ENCODER_KEEP
        )


def _from_pretrained(location: str, dtype: torch.dtype, **kwargs) -> FluxKontextPipeline:
    try:
        return FluxKontextPipeline.from_pretrained(location, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"could not load the pipeline from {location}: {error}") from None


def _load_single_file(source: ModelSource, components: str, target: _Target, token: str | None):
    """A BFL safetensors or GGUF transformer, with the text encoders, VAE and configs from `components`."""
    dtype = target.dtype
    comfy = comfy_component_files(components)
    if comfy is not None:  # ComfyUI's clip_l / t5xxl / ae files: no diffusers repository needed
        transformer = _single_file_transformer(source, comfy.transformer_config(), target)
        pipe = load_comfy_pipeline(comfy, transformer, dtype)
        _quantize_in_place(pipe, target, transformer=False, text_encoder=True)
        return pipe
    rest = classify_source(components)
    if rest.kind in (SourceKind.single_file, SourceKind.gguf):
        raise ModelUnavailable(
            f"--components must be a diffusers folder, a hub repo id, 'tiny', or ComfyUI's component files (a "
            f"folder or a comma-separated list of clip_l, t5xxl and ae .safetensors files); got the file {components}"
        )
    if rest.kind is SourceKind.tiny:
        pipe = build_tiny_pipeline().to(dtype)
        config = dict(pipe.transformer.config)
    else:
        if rest.kind is SourceKind.hub:
            check_hub_access(rest.location, token, flag="--components")
        config = FluxTransformer2DModel.load_config(
            rest.location, subfolder="transformer", token=token, local_files_only=rest.kind is SourceKind.folder
        )
        pipe = None
    transformer = _single_file_transformer(source, config, target)
    if pipe is not None:
        pipe.transformer = transformer
        _quantize_in_place(pipe, target, transformer=False, text_encoder=True)
        return pipe
    kwargs = {"local_files_only": True} if rest.kind is SourceKind.folder else {"token": token}
    config, later = _load_time_quantization(target, "none")
    pipe = _from_pretrained_with(rest.location, dtype, transformer, quantization_config=config, **kwargs)
    _quantize_in_place(pipe, target, transformer=False, text_encoder="text_encoder_2" in later)
    return pipe


def _single_file_transformer(source: ModelSource, config: dict, target: _Target):
    if source.kind is SourceKind.gguf:
        return load_gguf_transformer(source.location, config, target.dtype)
    return build_transformer(
        config, BflSafetensors(source.location), target.precision.transformer, target.device, target.dtype
    )


def _from_pretrained_with(location: str, dtype, transformer, **kwargs) -> FluxKontextPipeline:
    try:
        return FluxKontextPipeline.from_pretrained(location, transformer=transformer, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"could not load the pipeline components from {location}: {error}") from None


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes the weights take as loaded (quantized tensors count their packed size)."""
    total = 0
    for param in module.parameters():
        try:
            total += param.numel() * param.element_size()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without a plain element size
            total += param.numel()
    return total


def _place(pipe: FluxKontextPipeline, placement: Placement) -> None:
    mode, device = placement.memory_mode, placement.device
    if mode == "gpu":
        pipe.to(device)
    elif mode == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "group-offload":
        # Every component streams to the GPU one block at a time, overlapped by a CUDA stream.
        pipe.enable_group_offload(
            onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=True
        )
    else:
        pipe.enable_sequential_cpu_offload(device=device)
