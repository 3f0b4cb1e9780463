"""The engine: one loaded model, one edit at a time, with progress and cancel."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .. import __version__
from ..imaging.decode import DecodedImage
from ..imaging.encode import encode_image
from ..resolution import nearest_preferred_size, output_size
from ..schema import MAX_REFERENCE_IMAGES, MAX_SEED, EditSettings, InputError, OutputFormat
from .denoise import DenoiseInputs, denoise, sigma_schedule
from .loading import LoadedModel, load_model
from .preview import latent_preview
from .safety import SafetyChecker
from .tokens import grid_ids, pack, reference_ids, unpack

T5_MAX_TOKENS = 512


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


ProgressCallback = Callable[[Progress], None]


class Engine:
    """Runs FLUX.1 Kontext edits on one loaded model."""

    def __init__(self, model: LoadedModel, safety: SafetyChecker | None = None):
        self.model = model
        self.pipe = model.pipe
        self.device = model.placement.device
        self.safety = safety
        self.vae_scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @classmethod
    def load(cls, safety_model: str | None = None, **kwargs) -> Engine:
        """Load a model (see loading.load_model for the arguments), and the safety model if named."""
        model = load_model(**kwargs)
        safety = SafetyChecker.load(safety_model, device=model.placement.device) if safety_model else None
        return cls(model, safety)

    def edit(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
    ) -> EditResult:
        """Run one edit and return the encoded images plus what was used."""
        settings = request.settings
        started = time.perf_counter()
        pixels, seed, (width, height) = self.generate(request, progress, should_stop, previews)
        generated = time.perf_counter()
        fmt = settings.output_format or request.images[0].format
        pictures = [Image.fromarray((array * 255).round().astype(np.uint8), "RGB") for array in pixels]
        flags, logs = None, []
        if request.safety_check and self.safety is not None:
            pictures, flags = self.safety.apply(pictures)
            if any(flags):
                logs.append(f"safety checker blacked out {sum(flags)} of {len(flags)} images")
        images = []
        for index, picture in enumerate(pictures):
            metadata = self._metadata(settings, (seed + index) % (MAX_SEED + 1), width, height)
            images.append(encode_image(picture, fmt, settings.output_quality, metadata))
        timings = {"generate": generated - started, "encode": time.perf_counter() - generated}
        return EditResult(images, fmt, width, height, seed, timings, flags, logs)

    @torch.inference_mode()
    def generate(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        previews: bool = False,
    ) -> tuple[np.ndarray, int, tuple[int, int]]:
        """The edit as float pixels in [0, 1], shape (num_images, H, W, 3), plus seed and size."""
        settings = request.settings
        self._check_images(request.images)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
        main = request.images[0].image
        width, height = output_size(settings.resolution_mode, main.width, main.height)
        batch = settings.num_images

        text, pooled, text_ids = self.pipe.encode_prompt(
            prompt=settings.prompt,
            prompt_2=None,
            device=self.device,
            num_images_per_prompt=batch,
            max_sequence_length=T5_MAX_TOKENS,
        )
        dtype = text.dtype
        references, grids = self._encode_references([d.image for d in request.images], dtype)
        latent_h, latent_w = height // self.vae_scale, width // self.vae_scale
        noise = self._noise(seed, batch, latent_h, latent_w, dtype)
        positions = torch.cat([grid_ids(latent_h // 2, latent_w // 2), reference_ids(grids)], dim=0)
        inputs = DenoiseInputs(
            noise=noise,
            reference_tokens=references.expand(batch, -1, -1),
            position_ids=positions.to(self.device, dtype),
            text_embeddings=text,
            pooled_embeddings=pooled,
            text_ids=text_ids,
            guidance=settings.guidance_scale,
        )
        steps = settings.num_inference_steps
        sigmas = sigma_schedule(copy.deepcopy(self.pipe.scheduler), steps, noise.shape[1], self.device)

        def on_step(step: int, clean_estimate: torch.Tensor) -> None:
            if progress is None:
                return
            preview = None
            if previews:
                preview = latent_preview(unpack(clean_estimate[:1], latent_h, latent_w)[0])
            progress(Progress(step, steps, preview))

        tokens = denoise(self.pipe.transformer, inputs, sigmas, on_step, should_stop)
        pixels = self._decode(tokens, latent_h, latent_w)
        return pixels, seed, (width, height)

    def _check_images(self, images: list[DecodedImage]) -> None:
        if not images:
            raise InputError("image_url", "an input image is required")
        if len(images) > 1 + MAX_REFERENCE_IMAGES:
            raise InputError(
                "image_urls",
                f"at most {MAX_REFERENCE_IMAGES} reference images besides the main one (got {len(images) - 1})",
            )

    def _encode_references(self, images: list[Image.Image], dtype: torch.dtype):
        """VAE-encode each image at its nearest preferred size; return packed tokens and token grids."""
        processor = self.pipe.image_processor
        vae = self.pipe.vae
        token_parts, grids = [], []
        for image in images:
            width, height = nearest_preferred_size(image.width, image.height)
            resized = processor.resize(image, height, width)
            pixels = processor.preprocess(resized, height, width).to(self.device, dtype)
            latent = vae.encode(pixels).latent_dist.mode()
            latent = (latent - vae.config.shift_factor) * vae.config.scaling_factor
            token_parts.append(pack(latent))
            grids.append((latent.shape[2] // 2, latent.shape[3] // 2))
        return torch.cat(token_parts, dim=1), grids

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

    def _metadata(self, settings: EditSettings, seed: int, width: int, height: int) -> dict | None:
        if not settings.write_metadata:
            return None
        return {
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
