"""Which edits may run together as one batch: one function, read by the engine and by the scheduler.

Pure arithmetic, no torch: the scheduler groups queued predictions by it before any model runs, and the
engine refuses a batch whose members disagree on it, so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from .resolution import nearest_preferred_size, output_size

BatchKey = tuple


def runs_alone(output_resolution: str, masked: bool) -> bool:
    """An edit with a mask, or at the input's own size (output_resolution "input"), is never batched: its mask and
    crop are its own, and its result is composited onto its own full-size picture."""
    return masked or output_resolution == "input"


def batch_key(
    resolution_mode: str,
    image_sizes: Sequence[tuple[int, int]],
    num_inference_steps: int,
    guidance_scale: float,
    acceleration: str,
    loras: Sequence[tuple[str, float]] = (),
) -> BatchKey:
    """Edits with equal keys can be denoised together: the same output size, steps, guidance and acceleration,
    references that pack to the same token grids, and the same LoRAs at the same scales.

    image_sizes: (width, height) of the main image, then of each reference. loras: (content digest, scale)."""
    width, height = image_sizes[0]
    size = output_size(resolution_mode, width, height)
    references = tuple(nearest_preferred_size(w, h) for w, h in image_sizes)
    return size, num_inference_steps, guidance_scale, acceleration, references, tuple(loras)
