"""Masked denoising: only the masked region of the main image is regenerated, as diffusers'
FluxKontextInpaintPipeline does it.

- strength (0-1) picks where on the noise schedule the edit starts: the last
  int(steps * strength) steps run, diffusers' get_timesteps rule (strength 1: all of them);
- the output starts as the main image's own latents noised to that first level (at strength 1: pure noise);
- after every step, the latent cells outside the mask are put back to the main image's latents, noised to the
  next step's level with the same noise (after the last step: the clean latents), so the model sees the known
  picture at every step and only the masked cells move;
- the main image still goes in as the Kontext reference too, as in any edit.

A latent cell counts as masked when any pixel of its 8x8 footprint is (regions.covered_cells), so every masked
pixel is regenerated; diffusers samples one pixel per cell. On masks whose edges lie on the 16-pixel token grid
at the output size, the two are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..imaging.regions import covered_cells
from .kontext import encode_latent
from .tokens import pack


def start_step(steps: int, strength: float) -> int:
    """The first of `steps` scheduled steps that runs: diffusers' get_timesteps rule."""
    return int(max(steps - min(steps * strength, steps), 0))


@dataclass
class MaskedStart:
    """What masked denoising needs besides an edit's inputs, one row per output image."""

    known: torch.Tensor  # (B, N_out, 64) packed latents of the main image at the output size
    noise: torch.Tensor  # (B, N_out, 64) the edit's noise, re-used to noise the known latents at every level
    mask: torch.Tensor  # (B, N_out, 64) 1 where the latent may change, 0 where it is the main image's

    def first_latents(self, sigma: torch.Tensor) -> torch.Tensor:
        """The starting point: the known latents noised to `sigma` (1: the noise itself)."""
        return self.noised(sigma)

    def noised(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(self.known.device, self.known.dtype)
        return sigma * self.noise + (1.0 - sigma) * self.known

    def blend(self, latents: torch.Tensor, sigma_next: torch.Tensor, last: bool) -> torch.Tensor:
        """After a step to `sigma_next`: the masked cells from `latents`, the others the known picture at that level."""
        known = self.known if last else self.noised(sigma_next)
        return (1 - self.mask) * known + self.mask * latents

    def rows(self, index: torch.Tensor) -> MaskedStart:
        return replace(
            self,
            known=self.known.index_select(0, index),
            noise=self.noise.index_select(0, index),
            mask=self.mask.index_select(0, index),
        )


def mask_tokens(
    mask: np.ndarray, latent_h: int, latent_w: int, channels: int, batch: int, device, dtype
) -> torch.Tensor:
    """(batch, N, channels*4): a pixel mask of the main image as packed latent tokens, 1 where it may change."""
    cells = torch.from_numpy(covered_cells(mask, latent_w, latent_h).astype(np.float32))
    latent = cells[None, None].expand(batch, channels, latent_h, latent_w).contiguous()
    return pack(latent).to(device, dtype)


def masked_start(pipe, main, mask: np.ndarray, references: torch.Tensor, main_grid, size, noise) -> MaskedStart:
    """The main image's latents at the output (width, height): its own reference tokens when it was encoded at
    that size, else encoded again; the edit's noise; and the mask's latent cells; one row per output image."""
    (rows, cols), (width, height) = main_grid, size
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    batch = noise.shape[0]
    if (cols * 2 * scale, rows * 2 * scale) == (width, height):
        known = references[:, : rows * cols]
    else:
        known = pack(encode_latent(pipe, main, width, height, noise.device)).expand(batch, -1, -1)
    channels = pipe.transformer.config.in_channels // 4
    cells = mask_tokens(mask, height // scale, width // scale, channels, batch, noise.device, noise.dtype)
    return MaskedStart(known.to(noise.dtype), noise, cells)
