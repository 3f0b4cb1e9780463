"""What an edit with a mask or output_resolution "input" runs on, and how its result is laid back.

- output_resolution "model" with a mask: the masked edit (masked.py) of the main image, at the model's size.
- output_resolution "input": the main image arrives at its full size (decode_image(full_size=True)). The model
  edits what a model-size decode would keep of it, or, for a small masked region, a crop around the region
  (imaging/crop.py says when); the result is upscaled and composited onto the original through the mask, or,
  without one, through where the edit changed the picture (imaging/composite.py).

Mask rules: a mask of another size than the main image, or an empty one, is an InputError naming "mask"; a full
mask edits the whole picture (at strength 1 exactly the plain edit; below 1 the whole picture starts from the
input noised to that level, as any masked edit does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..imaging.composite import check_output_pixels, composite, difference_region, scaled_region
from ..imaging.crop import crop_box
from ..imaging.decode import DecodedImage, model_view
from ..imaging.regions import Box, binary_mask, check_mask, mask_bounds, resized_mask
from ..schema import EditSettings


@dataclass
class RegionPlan:
    main: DecodedImage  # the main image as the model gets it: the whole picture, or the crop
    mask: np.ndarray | None  # over `main`: where the latents may change; None: a plain edit
    resolution_mode: str  # the model's output size rule for `main` (a crop is chosen to fit its preferred size)
    original: Image.Image | None = None  # output_resolution "input": the full-size picture the result is laid on
    region: np.ndarray | None = None  # over `original`: what may change; None: where the edit changed the picture
    box: Box | None = None  # the crop of `original` the model edits; None: the whole picture


def needs_region_edit(settings: EditSettings, mask: DecodedImage | None) -> bool:
    return mask is not None or settings.output_resolution == "input"


def plan_region_edit(settings: EditSettings, main: DecodedImage, mask: DecodedImage | None) -> RegionPlan:
    pixels, full = None, False
    if mask is not None:
        pixels = binary_mask(mask.image)
        full = check_mask(pixels, main.original_size, mask_size=mask.original_size).full
        if full and settings.strength == 1:
            pixels = None  # exactly the plain edit
    if settings.output_resolution != "input":
        return RegionPlan(main, pixels, settings.resolution_mode)
    original = main.image
    if original.size != main.original_size:
        raise ValueError("output_resolution input needs the main image at its full size (decode_image full_size)")
    check_output_pixels(*original.size)
    region = None if pixels is None else resized_mask(pixels, original.size)
    box = crop_box(original.size, mask_bounds(region)) if region is not None and not full else None
    if box is None:
        seen = DecodedImage(model_view(original), main.format, original.size)
        return RegionPlan(seen, region, settings.resolution_mode, original, region)
    left, top, right, bottom = box
    crop = DecodedImage(model_view(original.crop(box)), main.format, (right - left, bottom - top))
    return RegionPlan(crop, region[top:bottom, left:right], "match_input", original, region, box)


def laid_back(plan: RegionPlan, edited: Image.Image, difference_threshold: float) -> Image.Image:
    """The model's result on the original, at the original's size (output_resolution "input")."""
    region = plan.region
    if region is None:
        region = scaled_region(difference_region(edited, plan.main.image, difference_threshold), plan.original.size)
    return composite(plan.original, edited, region, plan.box)
