"""The crop path: a small masked region of a large picture is edited on a crop around it, at the model's full
size, instead of on the whole picture scaled down to the model's size. Pure arithmetic.

When it applies: output_resolution "input", a mask that is not full, and a crop (below) that covers at most
CROP_MAX_SHARE (half) of the picture's area. Otherwise the whole picture is edited.

The crop: the mask's bounding box, padded on every side by half its longer side (at least CROP_MIN_PADDING
pixels, as diffusers' padding_mask_crop pads), grown to at least CROP_MIN_SIDE pixels a side, then widened
or heightened (centred on the region, shifted to stay inside the picture) to the aspect ratio of the nearest
preferred Kontext size. The model edits the crop at that preferred size (resolution_mode does not apply: the
crop is chosen to fit it), and the result is laid back onto the original through the mask.
"""

from __future__ import annotations

from ..resolution import nearest_preferred_size, output_size
from .regions import Box

CROP_MAX_SHARE = 0.5
CROP_MIN_PADDING = 64
CROP_MIN_SIDE = 512


def crop_box(image_size: tuple[int, int], mask_bounds: Box) -> Box | None:
    """The crop to edit for a mask within `mask_bounds` on a picture of `image_size`; None: edit the whole."""
    width, height = image_size
    left, top, right, bottom = mask_bounds
    pad = max(CROP_MIN_PADDING, max(right - left, bottom - top) // 2)
    box = _grown((left - pad, top - pad, right + pad, bottom + pad), CROP_MIN_SIDE, CROP_MIN_SIDE, image_size)
    box_width, box_height = box[2] - box[0], box[3] - box[1]
    target_width, target_height = nearest_preferred_size(box_width, box_height)
    if box_width / box_height < target_width / target_height:
        box = _grown(box, round(box_height * target_width / target_height), box_height, image_size)
    else:
        box = _grown(box, box_width, round(box_width * target_height / target_width), image_size)
    if (box[2] - box[0]) * (box[3] - box[1]) > CROP_MAX_SHARE * width * height:
        return None
    return box


def generated_size(
    image_size: tuple[int, int], resolution_mode: str, output_resolution: str, mask_bounds: Box | None
) -> tuple[int, int]:
    """The (width, height) the model generates for an edit: what pricing counts. mask_bounds: None without a mask
    (or with a full one)."""
    box = crop_box(image_size, mask_bounds) if output_resolution == "input" and mask_bounds is not None else None
    if box is not None:
        return nearest_preferred_size(box[2] - box[0], box[3] - box[1])
    return output_size(resolution_mode, *image_size)


def _grown(box: Box, min_width: int, min_height: int, image_size: tuple[int, int]) -> Box:
    """`box` clipped to the picture, then grown about its centre to at least min_width x min_height (as far as the
    picture allows), shifted inward where it would cross an edge."""
    width, height = image_size
    left, top, right, bottom = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
    left, right = _span(left, right, min_width, width)
    top, bottom = _span(top, bottom, min_height, height)
    return left, top, right, bottom


def _span(start: int, end: int, length: int, limit: int) -> tuple[int, int]:
    length = min(max(length, end - start), limit)
    start = max(0, min((start + end - length) // 2, limit - length))
    return start, start + length
