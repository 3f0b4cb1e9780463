"""Full-resolution results (output_resolution "input"): the edit, made at the model's size, is upscaled and
laid onto the original's own pixels through a feathered region, so every pixel outside the region and its
feather is the input's, byte for byte. Pure numpy and Pillow.

The region is the mask when the edit had one; without one it is where the edit changed the picture: the
difference between the edit and the input as the model saw it (at the model's size), above a threshold
(FLUXEDIT_DIFFERENCE_THRESHOLD), cleaned of specks and holes, then scaled to the original's size. The
feather is a ramp of FEATHER_FRACTION of the longer side (at least MIN_FEATHER pixels) outside the region.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..schema import InputError
from .regions import MASK_LEVEL, Box, cleaned, feathered_alpha, mask_bounds

MAX_OUTPUT_PIXELS = 40_000_000  # the largest input output_resolution "input" accepts (a 7746 x 5164 photo)
DEFAULT_DIFFERENCE_THRESHOLD = 0.1  # of full scale (0-1): a change smaller than this, after a light blur, is noise
FEATHER_FRACTION = 1 / 200
MIN_FEATHER = 4
DIFFERENCE_BLUR = 1  # box-blur radius (model pixels) before the threshold: single noisy pixels do not count
OPEN_RADIUS = 2  # model pixels: specks smaller than 5x5 leave the difference region
CLOSE_RADIUS = 4  # model pixels: holes and gaps narrower than 9 pixels fill


def check_output_pixels(width: int, height: int, field: str = "output_resolution") -> None:
    """Refuse a full-resolution result larger than MAX_OUTPUT_PIXELS."""
    if width * height > MAX_OUTPUT_PIXELS:
        raise InputError(
            field,
            f"input makes a {width}x{height} result ({width * height:,} pixels); at most {MAX_OUTPUT_PIXELS:,} "
            "pixels come back at the input's size: use output_resolution model, or scale the image down",
        )


def feather_radius(width: int, height: int) -> int:
    """Half the feather: the ramp spans 2 * feather_radius pixels outside the region (feather_width)."""
    return max(MIN_FEATHER, round(max(width, height) * FEATHER_FRACTION)) // 2 + 1


def feather_width(width: int, height: int) -> int:
    """How far (in x or y) outside the region a pixel may still differ from the input."""
    return 2 * feather_radius(width, height)


def difference_region(edited: Image.Image, seen: Image.Image, threshold: float) -> np.ndarray:
    """Where `edited` differs from `seen` (the input at the same size) by more than `threshold` (0-1) in any
    channel, after a light blur; cleaned of specks and small holes."""
    if edited.size != seen.size:
        seen = seen.resize(edited.size, Image.Resampling.LANCZOS)
    blur = ImageFilter.BoxBlur(DIFFERENCE_BLUR)
    a = np.asarray(edited.convert("RGB").filter(blur), dtype=np.int16)
    b = np.asarray(seen.convert("RGB").filter(blur), dtype=np.int16)
    changed = np.abs(a - b).max(axis=2) > threshold * 255
    return cleaned(changed, OPEN_RADIUS, CLOSE_RADIUS)


def scaled_region(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A region at another (width, height), smoothly (bilinear, then the half level), so its edge stays straight."""
    if region.shape[::-1] == tuple(size):
        return region
    picture = Image.fromarray(region.astype(np.uint8) * 255, "L").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(picture) >= MASK_LEVEL


def composite(original: Image.Image, edited: Image.Image, region: np.ndarray, box: Box | None = None) -> Image.Image:
    """`original` with `edited` laid on `box` (default: the whole picture; `edited` is resized to fit it), where
    `region` ((height, width) booleans over the whole original) says, with a feathered edge inside the box.
    Every pixel farther than feather_width from the region, and every pixel outside the box, is the original's."""
    width, height = original.size
    left, top, right, bottom = box or (0, 0, width, height)
    result = np.array(original.convert("RGB"))
    bounds = mask_bounds(region[top:bottom, left:right])
    if bounds is None:
        return Image.fromarray(result, "RGB")
    radius = feather_radius(width, height)
    reach = 2 * radius + 1
    # Only the region's surroundings within the box are touched: a small region of a big photo costs little.
    x0, y0 = max(left, left + bounds[0] - reach), max(top, top + bounds[1] - reach)
    x1, y1 = min(right, left + bounds[2] + reach), min(bottom, top + bounds[3] + reach)
    alpha = feathered_alpha(region[y0:y1, x0:x1], radius).astype(np.uint16)[..., None]
    scaled = edited.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    laid = np.asarray(scaled, dtype=np.uint16)[y0 - top : y1 - top, x0 - left : x1 - left]
    under = result[y0:y1, x0:x1].astype(np.uint16)
    blended = (laid * alpha + under * (255 - alpha) + 127) // 255
    result[y0:y1, x0:x1] = np.where(alpha > 0, blended, under).astype(np.uint8)
    return Image.fromarray(result, "RGB")
