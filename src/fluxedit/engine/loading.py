"""Load the FLUX.1 Kontext components from any source and place them in memory.

The components are held in a diffusers `FluxKontextPipeline` object because it
is a convenient, well-tested container (loading, offload hooks); the edit
itself runs in our own loop (denoise.py), not in the pipeline's __call__.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from accelerate import init_empty_weights
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file
from transformers.utils import logging as transformers_logging

from ..schema import ModelUnavailable
from .bfl_checkpoint import bfl_to_diffusers
from .devices import Placement, resolve_placement
from .hub_access import check_hub_access
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


def load_model(
    model: str = DEFAULT_MODEL,
    components: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    memory_mode: str = "auto",
    token: str | None = None,
    text_encoder_device: str = "auto",
) -> LoadedModel:
    """Load `model` (and, for a single file, the rest from `components`: required then) and place it.

    text_encoder_device="cpu" keeps T5-XXL (9.5 GB in bf16) in CPU memory: slower prompts (the engine
    remembers recent ones), 9.5 GB more room on the GPU."""
    source = classify_source(model)
    require_components(source, components)  # before any download or hub search
    # The dtype depends on the device only, so decide it before loading anything.
    target_dtype = resolve_placement(device, dtype, "gpu", {"none": 0}).dtype
    pipe = _load_pipeline(source, components, target_dtype, token)
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
    log.info("loaded %s on %s (%s, %s)", source, placement.device, placement.dtype, placement.memory_mode)
    return LoadedModel(pipe, source, placement)


def _load_pipeline(source: ModelSource, components: str | None, dtype: torch.dtype, token: str | None):
    if source.kind is SourceKind.tiny:
        return build_tiny_pipeline().to(dtype)
    if source.kind is SourceKind.folder:
        return _from_pretrained(source.location, dtype, local_files_only=True)
    if source.kind is SourceKind.hub:
        check_hub_access(source.location, token)
        return _from_pretrained(source.location, dtype, token=token)
    return _load_single_file(source.location, components, dtype, token)


def _from_pretrained(location: str, dtype: torch.dtype, **kwargs) -> FluxKontextPipeline:
    try:
        return FluxKontextPipeline.from_pretrained(location, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"could not load the pipeline from {location}: {error}") from None


def _load_single_file(path: str, components: str, dtype: torch.dtype, token: str | None):
    """A BFL transformer checkpoint, with the text encoders, VAE and configs from `components`."""
    rest = classify_source(components)
    if rest.kind is SourceKind.single_file:
        raise ModelUnavailable(
            f"--components must be a diffusers folder, a hub repo id or 'tiny' (got the file {components})"
        )
    try:
        state = bfl_to_diffusers(load_file(path))
    except (ValueError, KeyError, OSError) as error:
        raise ModelUnavailable(f"{path} is not a FLUX transformer checkpoint: {error}") from None
    if rest.kind is SourceKind.tiny:
        pipe = build_tiny_pipeline()
        config = pipe.transformer.config
    else:
        if rest.kind is SourceKind.hub:
            check_hub_access(rest.location, token, flag="--components")
        config = FluxTransformer2DModel.load_config(
            rest.location, subfolder="transformer", token=token, local_files_only=rest.kind is SourceKind.folder
        )
        pipe = None
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(config)
    try:
        transformer.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ModelUnavailable(f"{path} does not fit the transformer described by {components}: {error}") from None
    transformer = transformer.to(dtype).eval()
    if pipe is not None:
        pipe.transformer = transformer
        return pipe.to(dtype)
    kwargs = {"local_files_only": True} if rest.kind is SourceKind.folder else {"token": token}
    return _from_pretrained_with(rest.location, dtype, transformer, **kwargs)


def _from_pretrained_with(location: str, dtype, transformer, **kwargs) -> FluxKontextPipeline:
    try:
        return FluxKontextPipeline.from_pretrained(location, transformer=transformer, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"could not load the pipeline components from {location}: {error}") from None


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


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
