"""The engine: one loaded model, one edit at a time, with progress and cancel."""

from __future__ import annotations

import copy
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .. import __version__
from ..batching import batch_key
from ..config import EngineConfig
from ..imaging.composite import DEFAULT_DIFFERENCE_THRESHOLD
from ..imaging.decode import DecodedImage
from ..imaging.encode import encode_image
from ..imaging.regions import Box
from ..resolution import nearest_preferred_size
from ..schema import MAX_REFERENCE_IMAGES, MAX_SEED, EditCancelled, EditSettings, InputError, OutputFormat
from .acceleration import plan_steps
from .denoise import DenoiseInputs, denoise, sigma_schedule
from .fast_paths import FastTransformer, apply_attention_backend, compiles, pick_attention_backend
from .kontext import encode_prompt, encode_references, position_ids
from .loading import LoadedModel, load_model
from .loras import DEFAULT_MAX_LOADED, HOTSWAP_TARGET_RANK, LoraManager, LoraSpec
from .masked import masked_start, start_step
from .preview import latent_preview
from .region_edit import laid_back, needs_region_edit, plan_region_edit
from .safety import SafetyChecker
from .step_cache import first_block_cache
from .tokens import pack, unpack

PROMPT_CACHE_SIZE = 8  # iterative editing repeats prompts; each entry is a few MB


@dataclass(frozen=True)
class EngineOptions:
    cache_mode: str = "schedule"  # or "adaptive" (First-Block-Cache)
    cache_threshold: float | None = None  # 0 switches step caching off; None: the level's default
    attention: str = "auto"  # auto, native, flash, _flash_3, sage
    max_loras: int = DEFAULT_MAX_LOADED  # adapters kept loaded for switching without a reload
    difference_threshold: float = DEFAULT_DIFFERENCE_THRESHOLD  # output_resolution input without a mask (0-1)


@dataclass
class Generation:
    pixels: np.ndarray  # (num_images, H, W, 3): floats in [0, 1]; uint8 at the input's size (output_resolution input)
    seed: int
    size: tuple[int, int]  # the output's (width, height)
    transformer_passes: int
    logs: list[str]
    generated_size: tuple[int, int] | None = None  # what the model generated, when not `size` (output_resolution input)
    crop: Box | None = None  # the part of the main image the model edited (the crop path); None: all of it


@dataclass(frozen=True)
class Progress:
    step: int  # 1-based, the step just finished
    total: int
    preview: Image.Image | None = None  # latent-resolution RGB, when previews were asked for


@dataclass
class EditRequest:
    settings: EditSettings
    images: list[DecodedImage]  # the main image first, then up to 3 references
    safety_check: bool = False  # run the safety model (when the engine has one) on the outputs
    loras: list[LoraSpec] = field(default_factory=list)  # adapters for this edit, with their scales
    mask: DecodedImage | None = None  # where the edit may change the main image (white/opaque); None: everywhere


@dataclass
class EditResult:
    images: list[bytes]
    format: OutputFormat
    width: int
    height: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    has_nsfw_concepts: list[bool] | None = None  # None when no safety check ran
    logs: list[str] = field(default_factory=list)
    transformer_passes: int = 0
    acceleration: str = "none"
    generated_width: int = 0  # the size the model generated (pricing counts it): width/height unless
    generated_height: int = 0  # output_resolution input made the output the input's size
    crop: Box | None = None  # (left, top, right, bottom) of the main image the model edited; None: all of it


ProgressCallback = Callable[[Progress], None]


class _BatchMembers:
    """Which requests of a batch are still in it, and where their rows are (a dropped request's rows leave)."""

    def __init__(self, counts: list[int], should_drop: Callable[[int], bool] | None):
        self.counts = counts
        self.should_drop = should_drop
        self.live = list(range(len(counts)))  # request indices, in row order
        self.changes = 0

    def first_rows(self) -> list[tuple[int, int]]:
        """(request index, its first row in the current batch) for each request still in it."""
        firsts, row = [], 0
        for index in self.live:
            firsts.append((index, row))
            row += self.counts[index]
        return firsts

    def keep_rows(self) -> list[int] | None:
        """Asked before each step: None keeps the batch as it is; else the rows of the current batch to keep."""
        if self.should_drop is None:
            return None
        dropped = {index for index in self.live if self.should_drop(index)}
        if not dropped:
            return None
        kept = [row + k for index, row in self.first_rows() if index not in dropped for k in range(self.counts[index])]
        self.live = [index for index in self.live if index not in dropped]
        self.changes += 1
        if not self.live:
            raise EditCancelled("every edit of the batch was cancelled")
        return kept


def request_batch_key(request: EditRequest) -> tuple:
    """The batching key (fluxedit.batching) of one request: the scheduler computes the same from stored records."""
    settings = request.settings
    return batch_key(
        settings.resolution_mode,
        [(d.image.width, d.image.height) for d in request.images],
        settings.num_inference_steps,
        settings.guidance_scale,
        settings.acceleration,
        [(spec.digest or spec.path, spec.scale) for spec in request.loras],
    )


class Engine:
    """Runs FLUX.1 Kontext edits on one loaded model."""

    def __init__(self, model: LoadedModel, safety: SafetyChecker | None = None, options: EngineOptions | None = None):
        self.model = model
        self.pipe = model.pipe
        self.device = model.placement.device
        self.safety = safety
        self.options = options or EngineOptions()
        self.vae_scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        self.attention = pick_attention_backend(self.options.attention, self.device)
        apply_attention_backend(self.pipe.transformer, self.attention)
        self.fast = FastTransformer(self.pipe.transformer, self.device)
        self._prompts: OrderedDict[tuple, tuple] = OrderedDict()
        # Where `high` compiles, adapters are hotswapped from the first one on, so a switch never recompiles.
        hotswap_rank = HOTSWAP_TARGET_RANK if compiles(self.device) else None
        self.loras = LoraManager(self.pipe, self.options.max_loras, hotswap_rank)

    @classmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        """The engine that `config` (Settings.engine_config) describes: how `edit` and each worker of `serve` build
        theirs (`train` loads its model from the same config, EngineConfig.training_model_arguments)."""
        options = EngineOptions(
            config.cache_mode, config.cache_threshold, config.attention, config.max_loras, config.difference_threshold
        )
        return cls.load(safety_model=config.safety_model, options=options, **config.model_arguments())

    @classmethod
    def load(cls, safety_model: str | None = None, options: EngineOptions | None = None, **kwargs) -> Engine:
        """Load a model (see loading.load_model for the arguments), and the safety model if named."""
        model = load_model(**kwargs)
        safety = SafetyChecker.load(safety_model, device=model.placement.device) if safety_model else None
        return cls(model, safety, options)

    def edit(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
    ) -> EditResult:
        """Run one edit and return the encoded images plus what was used."""
        each = (lambda _index, update: progress(update)) if progress else None
        return self.edit_many([request], each, should_stop, previews)[0]

    def edit_many(
        self,
        requests: list[EditRequest],
        progress: Callable[[int, Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
        should_drop: Callable[[int], bool] | None = None,
    ) -> list[EditResult | None]:
        """Run several edits of the same size and settings as one batch (see `batch_key`); None for a dropped one."""
        started = time.perf_counter()
        generations = self.generate_many(requests, progress, should_stop, previews, should_drop)
        generate_time = (time.perf_counter() - started) / max(1, sum(g is not None for g in generations))
        return [
            None if g is None else self._encode(r, g, generate_time) for r, g in zip(requests, generations, strict=True)
        ]

    def warm_up(self) -> list[str]:
        """On a GPU, build and compile the `high` level's transformer now, so no user waits for it."""
        if self.device.type != "cuda":
            return []
        grey = DecodedImage(Image.new("RGB", (1024, 1024), (128, 128, 128)), OutputFormat.png)
        settings = EditSettings(prompt="warm-up", num_inference_steps=2, seed=0, acceleration="high")
        return self.generate(EditRequest(settings, [grey])).logs

    def _encode(self, request: EditRequest, generation: Generation, generate_time: float) -> EditResult:
        settings = request.settings
        started = time.perf_counter()
        seed, (width, height) = generation.seed, generation.size
        fmt = settings.output_format or request.images[0].format
        pictures = [Image.fromarray(_bytes(array), "RGB") for array in generation.pixels]
        flags, logs = None, list(generation.logs)
        if request.safety_check and self.safety is not None:
            pictures, flags = self.safety.apply(pictures)
            if any(flags):
                logs.append(f"safety checker blacked out {sum(flags)} of {len(flags)} images")
        images = []
        for index, picture in enumerate(pictures):
            metadata = self._metadata(settings, (seed + index) % (MAX_SEED + 1), width, height, request.loras)
            images.append(encode_image(picture, fmt, settings.output_quality, metadata))
        timings = {"generate": generate_time, "encode": time.perf_counter() - started}
        generated_width, generated_height = generation.generated_size or generation.size
        return EditResult(
            images,
            fmt,
            width,
            height,
            seed,
            timings,
            flags,
            logs,
            generation.transformer_passes,
            settings.acceleration,
            generated_width,
            generated_height,
            generation.crop,
        )

    def generate(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
    ) -> Generation:
        """The edit as float pixels in [0, 1], shape (num_images, H, W, 3), with what was used."""
        each = (lambda _index, update: progress(update)) if progress else None
        return self.generate_many([request], each, should_stop, previews)[0]

    @torch.inference_mode()
    def generate_many(
        self,
        requests: list[EditRequest],
        progress: Callable[[int, Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
        should_drop: Callable[[int], bool] | None = None,
    ) -> list[Generation | None]:
        """Several edits denoised as one batch; each keeps its own prompt, images and seeds.

        `should_drop(index)` is asked before each step for every request still in the batch: once it says yes,
        that request's rows leave the batch (the others go on, unchanged, and cost no more than without it), it
        gets no more progress and its result is None. When every request is dropped, EditCancelled is raised.

        An edit with a mask or output_resolution "input" runs alone (fluxedit.batching.runs_alone; region_edit.py).
        """
        for request in requests:
            self._check_images(request.images)
        if any(needs_region_edit(r.settings, r.mask) for r in requests):
            if len(requests) != 1:
                raise ValueError("an edit with a mask or output_resolution input runs alone, not in a batch")
            return [self._generate_region(requests[0], progress, should_stop, previews, should_drop)]
        return self._generate_batch(requests, progress, should_stop, previews, should_drop)

    def _generate_region(self, request: EditRequest, progress, should_stop, previews, should_drop) -> Generation | None:
        """A masked edit, or one at the input's size: the model runs on region_edit's plan, the result is laid back."""
        plan = plan_region_edit(request.settings, request.images[0], request.mask)
        settings = request.settings.model_copy(update={"resolution_mode": plan.resolution_mode})
        model_request = replace(request, settings=settings, images=[plan.main, *request.images[1:]], mask=None)
        generation = self._generate_batch([model_request], progress, should_stop, previews, should_drop, plan.mask)[0]
        if generation is None or plan.original is None:
            return generation
        edited = [Image.fromarray(_bytes(array), "RGB") for array in generation.pixels]
        threshold = self.options.difference_threshold
        pixels = np.stack([np.asarray(laid_back(plan, picture, threshold)) for picture in edited])
        (width, height), (full_width, full_height) = generation.size, plan.original.size
        where = "a crop {}x{} at ({}, {})".format(*_crop_size(plan.box)) if plan.box else "the whole picture"
        note = f"edited {where} at {width}x{height}, laid onto the {full_width}x{full_height} input"
        return replace(
            generation,
            pixels=pixels,
            size=plan.original.size,
            logs=[*generation.logs, note],
            generated_size=generation.size,
            crop=plan.box,
        )

    def _generate_batch(
        self,
        requests: list[EditRequest],
        progress,
        should_stop,
        previews: bool,
        should_drop,
        mask: np.ndarray | None = None,
    ) -> list[Generation | None]:
        """The denoising of one batch; `mask` (over the main image, one request only) makes it a masked edit."""
        keys = {request_batch_key(r) for r in requests}
        if len(keys) != 1:
            raise ValueError("edits in one batch must share output size, steps, guidance, acceleration and references")
        settings = requests[0].settings
        self.loras.activate(requests[0].loras)
        width, height = request_batch_key(requests[0])[0]
        latent_h, latent_w = height // self.vae_scale, width // self.vae_scale
        seeds = [r.settings.seed if r.settings.seed is not None else secrets.randbelow(MAX_SEED + 1) for r in requests]
        counts = [r.settings.num_images for r in requests]

        texts, pools, references, noises = [], [], [], []
        for request, seed, count in zip(requests, seeds, counts, strict=True):
            text, pooled, text_ids = self._encode_prompt(request.settings.prompt, count)
            reference_tokens, grids = self._encode_references([d.image for d in request.images])
            texts.append(text)
            pools.append(pooled)
            references.append(reference_tokens.expand(count, -1, -1))
            noises.append(self._noise(seed, count, latent_h, latent_w, text.dtype))
        dtype = texts[0].dtype
        positions = position_ids((latent_h // 2, latent_w // 2), grids)
        steps = settings.num_inference_steps
        sigmas = sigma_schedule(copy.deepcopy(self.pipe.scheduler), steps, noises[0].shape[1], self.device)
        masked = None
        if mask is not None:
            main = requests[0].images[0].image
            masked = masked_start(self.pipe, main, mask, references[0], grids[0], (width, height), torch.cat(noises))
            sigmas = sigmas[start_step(steps, settings.strength) :]
            steps = len(sigmas) - 1
        inputs = DenoiseInputs(
            noise=torch.cat(noises),
            reference_tokens=torch.cat(references),
            position_ids=positions.to(self.device, dtype),
            text_embeddings=torch.cat(texts),
            pooled_embeddings=torch.cat(pools),
            text_ids=text_ids,
            guidance=settings.guidance_scale,
            masked=masked,
        )
        members = _BatchMembers(counts, should_drop)

        def on_step(step: int, clean_estimate: torch.Tensor) -> None:
            if progress is None:
                return
            for index, row in members.first_rows():
                preview = None
                if previews:
                    preview = latent_preview(unpack(clean_estimate[row : row + 1], latent_h, latent_w)[0])
                progress(index, Progress(step, steps, preview))

        tokens, passes, logs = self._denoise(settings, inputs, sigmas, on_step, should_stop, members)
        pixels = self._decode(tokens, latent_h, latent_w)
        rows = dict(members.first_rows())
        return [
            Generation(pixels[rows[i] : rows[i] + counts[i]], seeds[i], (width, height), passes, logs)
            if i in rows
            else None
            for i in range(len(requests))
        ]

    def _denoise(self, settings: EditSettings, inputs, sigmas, on_step, should_stop, members: _BatchMembers):
        """Run the loop under the acceleration level's plan; return tokens, full passes and notes."""
        steps = len(sigmas) - 1
        plan = plan_steps(settings.acceleration, steps, self.options.cache_mode, self.options.cache_threshold)
        transformer, logs = self.pipe.transformer, []
        if settings.acceleration == "high":
            transformer, logs = self.fast.get()
        if plan.mode != "adaptive":
            tokens, passes = denoise(transformer, inputs, sigmas, on_step, should_stop, plan, members.keep_rows)
            return tokens, passes, list(logs)
        with first_block_cache(transformer, plan.threshold) as counter, ExitStack() as contexts:

            def keep_rows() -> list[int] | None:
                rows = members.keep_rows()
                if rows is not None:  # the cache holds the old batch's residuals: start a fresh one
                    contexts.enter_context(transformer.cache_context(f"fluxedit-edit-{members.changes}"))
                return rows

            tokens, _ = denoise(transformer, inputs, sigmas, on_step, should_stop, plan, keep_rows)
        return tokens, counter.full_passes, list(logs)

    def _encode_prompt(self, prompt: str, batch: int):
        """T5 and CLIP embeddings of `prompt`, remembered for the next edits with the same prompt."""
        key = (prompt, self.loras.active)  # a LoRA may touch the text encoders too
        if key in self._prompts:
            self._prompts.move_to_end(key)
            embeddings = self._prompts[key]
        else:
            embeddings = self._prompts[key] = encode_prompt(self.pipe, prompt, self.device)
            if len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return embeddings.text.repeat(batch, 1, 1), embeddings.pooled.repeat(batch, 1), embeddings.text_ids

    def _check_images(self, images: list[DecodedImage]) -> None:
        if not images:
            raise InputError("image_url", "an input image is required")
        if len(images) > 1 + MAX_REFERENCE_IMAGES:
            raise InputError(
                "image_urls",
                f"at most {MAX_REFERENCE_IMAGES} reference images besides the main one (got {len(images) - 1})",
            )

    def _encode_references(self, images: list[Image.Image]):
        """Each image at its nearest preferred size, as packed tokens (kontext.py), and their token grids."""
        sized = [(image, *nearest_preferred_size(image.width, image.height)) for image in images]
        return encode_references(self.pipe, sized, self.device)

    def _noise(self, seed: int, batch: int, latent_h: int, latent_w: int, dtype: torch.dtype) -> torch.Tensor:
        # One CPU generator per image (seed, seed+1, ...): image k of a batch is
        # reproducible alone with seed+k, and the noise is the same on every device.
        channels = self.pipe.transformer.config.in_channels // 4
        generators = [torch.Generator("cpu").manual_seed((seed + k) % (MAX_SEED + 1)) for k in range(batch)]
        latents = randn_tensor(
            (batch, channels, latent_h, latent_w), generator=generators, device=self.device, dtype=dtype
        )
        return pack(latents)

    def _decode(self, tokens: torch.Tensor, latent_h: int, latent_w: int) -> np.ndarray:
        vae = self.pipe.vae
        latents = unpack(tokens, latent_h, latent_w)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        # One image at a time: the decoder's activations at 1 MP are large.
        decoded = [vae.decode(latents[k : k + 1], return_dict=False)[0] for k in range(latents.shape[0])]
        return self.pipe.image_processor.postprocess(torch.cat(decoded), output_type="np")

    def _metadata(self, settings: EditSettings, seed: int, width: int, height: int, loras) -> dict | None:
        if not settings.write_metadata:
            return None
        extra = {"loras": [{"name": Path(s.path).name, "scale": s.scale} for s in loras]} if loras else {}
        return extra | {
            "prompt": settings.prompt,
            "seed": seed,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "resolution_mode": settings.resolution_mode,
            "width": width,
            "height": height,
            "model": str(self.model.source),
            "software": f"fluxedit {__version__}",
        }


def _bytes(array: np.ndarray) -> np.ndarray:
    """Pixels as 8-bit values: float pixels in [0, 1] rounded, 8-bit ones (a full-size result) as they are."""
    return array if array.dtype == np.uint8 else (array * 255).round().astype(np.uint8)


def _crop_size(box: Box) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return right - left, bottom - top, left, top
