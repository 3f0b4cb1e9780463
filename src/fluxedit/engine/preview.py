"""A cheap live preview: FLUX latents to RGB by a fixed linear map, no VAE decode.

The 16x3 factors and the bias are the ones ComfyUI publishes for the FLUX.1
latent space (comfy/latent_formats.py); they act on the model-space latent.
The preview has the latent's resolution: 1/8 of the output's sides.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

LATENT_RGB_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
LATENT_RGB_BIAS = (-0.0329, -0.0718, -0.0851)


def latent_preview(latent: torch.Tensor) -> Image.Image:
    """(16, H, W) model-space latent -> an RGB picture of H x W pixels."""
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latent.device)
    bias = torch.tensor(LATENT_RGB_BIAS, dtype=torch.float32, device=latent.device)
    rgb = torch.einsum("chw,cr->hwr", latent.float(), factors) + bias  # roughly [-1, 1]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
