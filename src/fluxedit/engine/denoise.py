"""Our denoising loop: rectified-flow Euler steps with the reference tokens appended.

Each step runs the transformer once on [noisy output tokens | reference tokens]
(guidance is distilled: one pass, no negative prompt) and keeps only the
prediction for the output tokens: kontext.predict, the call training makes too. The loop is ours, not the diffusers
pipeline's, so that step caching and batching can live here later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..schema import EditCancelled
from .acceleration import StepPlan, VelocityExtrapolator
from .kontext import PromptEmbeddings, predict, timesteps
from .masked import MaskedStart


@dataclass
class DenoiseInputs:
    noise: torch.Tensor  # (B, N_out, 64) packed output tokens at sigma = 1
    reference_tokens: torch.Tensor  # (B, N_ref, 64) packed reference latents
    position_ids: torch.Tensor  # (N_out + N_ref, 3)
    text_embeddings: torch.Tensor  # (B, T, D) T5
    pooled_embeddings: torch.Tensor  # (B, D) CLIP pooled
    text_ids: torch.Tensor  # (T, 3)
    guidance: float
    masked: MaskedStart | None = None  # a masked edit (masked.py): start from the main image, keep it unmasked


def flow_shift(image_seq_len: int, scheduler_config) -> float:
    """The timestep shift mu, linear in the number of output tokens."""
    base_len = scheduler_config.get("base_image_seq_len", 256)
    max_len = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.5)
    max_shift = scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


def sigma_schedule(scheduler, steps: int, image_seq_len: int, device: torch.device) -> torch.Tensor:
    """steps + 1 noise levels from 1 down to 0, shifted as the scheduler's config says."""
    sigmas = np.linspace(1.0, 1 / steps, steps)
    mu = flow_shift(image_seq_len, scheduler.config)
    scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=device)
    return scheduler.sigmas.clone()


def denoise(
    transformer: torch.nn.Module,
    inputs: DenoiseInputs,
    sigmas: torch.Tensor,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    plan: StepPlan | None = None,
    keep_rows: Callable[[], list[int] | None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Run every step; return the clean output tokens and how many full transformer passes ran.

    `on_step(i, x0)` gets the 1-based step number and the current estimate of the clean tokens.
    `should_stop()` is asked before each step; when it says yes, EditCancelled is raised.
    `plan` says which steps run the transformer (acceleration.py); by default, all of them.
    `keep_rows()` is also asked before each step: None keeps the batch as it is; a list of row indices keeps only
    those rows from then on (a cancelled member of a batch stops costing the others), in that order. The tokens
    returned are those of the rows kept. With `inputs.masked`, the loop starts from the main image noised to
    sigmas[0] and puts its unmasked cells back after every step (masked.py); with no step it returns that start.
    """
    masked = inputs.masked
    latents = inputs.noise if masked is None else masked.first_latents(sigmas[0]).to(inputs.noise.dtype)
    batch = latents.shape[0]
    dtype = latents.dtype
    guidance = torch.full((batch,), inputs.guidance, device=latents.device, dtype=torch.float32)
    steps = len(sigmas) - 1
    full_steps = plan.full_steps if plan is not None else frozenset(range(steps))
    extrapolator = VelocityExtrapolator()
    passes = 0
    for i in range(steps):
        if should_stop is not None and should_stop():
            raise EditCancelled(f"cancelled before step {i + 1} of {steps}")
        if keep_rows is not None and (rows := keep_rows()) is not None:
            latents, guidance, inputs = _select_rows(rows, latents, guidance, inputs, extrapolator)
            masked, batch = inputs.masked, latents.shape[0]
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if i in full_steps:
            prompt = PromptEmbeddings(inputs.text_embeddings, inputs.pooled_embeddings, inputs.text_ids)
            timestep = timesteps(sigma, batch, dtype, latents.device)
            velocity = predict(
                transformer, latents, inputs.reference_tokens, timestep, guidance, prompt, inputs.position_ids
            )
            extrapolator.record(float(sigma), velocity)
            passes += 1
        else:
            velocity = extrapolator.predict(float(sigma)).to(dtype)
        # Euler step in float32, as diffusers' FlowMatchEulerDiscreteScheduler does.
        next_latents = (latents.float() + (sigma_next - sigma) * velocity).to(velocity.dtype)
        if masked is not None:
            next_latents = masked.blend(next_latents, sigma_next, last=i == steps - 1)
        if on_step is not None:
            on_step(i + 1, latents.float() - sigma * velocity.float())
        latents = next_latents
    return latents, passes


def _select_rows(rows: list[int], latents, guidance, inputs: DenoiseInputs, extrapolator: VelocityExtrapolator):
    """Keep only `rows` of everything that has a batch dimension, the extrapolator's history included."""
    index = torch.tensor(rows, dtype=torch.long, device=latents.device)
    extrapolator.history = [(sigma, velocity.index_select(0, index)) for sigma, velocity in extrapolator.history]
    kept = replace(
        inputs,
        noise=inputs.noise.index_select(0, index),
        reference_tokens=inputs.reference_tokens.index_select(0, index),
        text_embeddings=inputs.text_embeddings.index_select(0, index),
        pooled_embeddings=inputs.pooled_embeddings.index_select(0, index),
        masked=None if inputs.masked is None else inputs.masked.rows(index),
    )
    return latents.index_select(0, index), guidance.index_select(0, index), kept
