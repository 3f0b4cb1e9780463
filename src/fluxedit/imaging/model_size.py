"""The size a decoded input image is kept at: what the model needs, and no more.

The engine resizes each image to its nearest preferred Kontext size (at most 1568 pixels a side, about
1 MP) and takes the output size from its aspect ratio (resolution.py). So a decoded image larger than
MODEL_PIXELS is downscaled to about that many pixels (twice the model's area: the engine's own resize
still only shrinks), at a size whose resolution choices are exactly those of the original (the same
nearest preferred size, the same `auto` output size): prices and batches computed from the original
size still hold.
"""

from __future__ import annotations

import math

from ..resolution import nearest_preferred_size, output_size

MODEL_PIXELS = 2 * 1024 * 1024
_AREA_FACTORS = (1, 1.25, 1.5, 2, 3, 4)
_NUDGES = [(dw, dh) for step in range(4) for dw, dh in ((step, 0), (-step, 0), (0, step), (0, -step))] + [
    (dw, dh) for dw in (-2, -1, 1, 2) for dh in (-2, -1, 1, 2)
]


def model_size(width: int, height: int) -> tuple[int, int] | None:
    """The smaller size to keep a width x height image at; None when it is small enough already."""
    if width * height <= MODEL_PIXELS:
        return None
    wanted = _choices(width, height)
    for area in (MODEL_PIXELS * factor for factor in _AREA_FACTORS):  # larger sizes give finer aspect steps
        if area >= width * height:
            break
        scale = math.sqrt(area / (width * height))
        scaled_width, scaled_height = max(1, round(width * scale)), max(1, round(height * scale))
        for dw, dh in _NUDGES:  # a pixel more or less where rounding lands on the other side of a choice
            candidate = (scaled_width + dw, scaled_height + dh)
            if _choices(*candidate) == wanted:
                return candidate
    return None  # no smaller size keeps the choices (an aspect right at a rounding edge): keep the original


def _choices(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return nearest_preferred_size(width, height), output_size("auto", width, height)
