"""What makes a transformer call a Kontext edit, shared by inference (engine.py, denoise.py) and training
(training/trainer.py), so a training step sees exactly what an edit's step sees, by construction:

- the prompt's T5 and CLIP embeddings (T5 at its full 512 tokens);
- each reference image resized, VAE-encoded (the distribution's mode, not a sample), shifted and scaled, then
  packed into 2x2 tokens;
- the position ids: the output grid with index 0, then the references with index 1 (tokens.py);
- the call itself: [noisy output tokens | reference tokens] in, the prediction for the output tokens out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .tokens import grid_ids, pack, reference_ids

T5_MAX_TOKENS = 512


@dataclass(frozen=True)
class PromptEmbeddings:
    text: torch.Tensor  # (1, T, D) T5
    pooled: torch.Tensor  # (1, D) CLIP pooled
    text_ids: torch.Tensor  # (T, 3)


def encode_prompt(pipe, prompt: str, device: torch.device) -> PromptEmbeddings:
    """The prompt's embeddings, in the transformer's dtype (the text encoders may sit elsewhere: T5 on the CPU)."""
    text, pooled, text_ids = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, device=device, num_images_per_prompt=1, max_sequence_length=T5_MAX_TOKENS
    )
    dtype = pipe.transformer.dtype
    return PromptEmbeddings(text.to(dtype), pooled.to(dtype), text_ids)


def encode_latent(pipe, image: Image.Image, width: int, height: int, device: torch.device) -> torch.Tensor:
    """(1, 16, height/8, width/8): `image` resized to width x height, VAE-encoded, in the transformer's dtype."""
    processor, vae = pipe.image_processor, pipe.vae
    pixels = processor.preprocess(processor.resize(image, height, width), height, width)
    latent = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
    return ((latent - vae.config.shift_factor) * vae.config.scaling_factor).to(pipe.transformer.dtype)


def latent_grid(latent: torch.Tensor) -> tuple[int, int]:
    """The (rows, cols) of the token grid a latent packs into."""
    return latent.shape[2] // 2, latent.shape[3] // 2


def encode_references(
    pipe, images: list[tuple[Image.Image, int, int]], device: torch.device
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(1, N_ref, 64) tokens of every (image, width, height), in order, and each one's token grid."""
    latents = [encode_latent(pipe, image, width, height, device) for image, width, height in images]
    return torch.cat([pack(latent) for latent in latents], dim=1), [latent_grid(latent) for latent in latents]


def position_ids(output_grid: tuple[int, int], reference_grids: list[tuple[int, int]]) -> torch.Tensor:
    """(N_out + N_ref, 3): the output's grid, then the references placed side by side with index 1."""
    return torch.cat([grid_ids(*output_grid), reference_ids(reference_grids)], dim=0)


def timesteps(sigma: torch.Tensor | float, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The transformer's timestep input for noise level `sigma`, rounded as diffusers' pipeline rounds it."""
    sigma = torch.as_tensor(sigma, device=device)
    return (sigma * 1000).expand(batch).to(dtype) / 1000


def predict(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    reference_tokens: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor,
    prompt: PromptEmbeddings,
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """One transformer pass on [noisy output tokens | reference tokens]: the velocity of the output tokens.
    `prompt`'s tensors have the batch's rows (B, T, D) and (B, D)."""
    output_len = latents.shape[1]
    return transformer(
        hidden_states=torch.cat([latents, reference_tokens], dim=1),
        timestep=timestep,
        guidance=guidance,
        pooled_projections=prompt.pooled,
        encoder_hidden_states=prompt.text,
        txt_ids=prompt.text_ids,
        img_ids=position_ids,
        return_dict=False,
    )[0][:, :output_len]
