"""Edit regions as boolean pixel masks: reading a mask picture, checking it, and the square morphology that
cleans and feathers a region. Pure numpy and Pillow (the API checks masks too, without torch).

A mask picture marks where an edit may change the main image: white, or opaque where it has transparency.
A mask with an alpha channel that is not opaque everywhere is read by its alpha (opaque = edit); any other
is read by its grey level. A pixel is in the region at half intensity or more (128 of 255), as diffusers'
mask processor binarises at 0.5. This is the one rule: the API (masks.py) stores masks by it, the worker and
the engine read them by it.

Morphology is over squares (Chebyshev distance), with box sums from cumulative sums, so its reach is exact:
dilating by r never marks a pixel more than r pixels (in x or y) from the region. The picture's border
repeats outward, so a region that touches the border is neither eroded nor faded there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..schema import InputError

MASK_LEVEL = 128  # half of 255: diffusers' mask processor binarises at 0.5
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive, like Pillow's


def alpha_channel(picture: Image.Image) -> Image.Image | None:
    """The picture's alpha as an "L" picture when it carries one (an alpha mode, or a transparent colour)."""
    if picture.mode in ALPHA_MODES:
        return picture.getchannel("A") if picture.mode in ("RGBA", "LA") else picture.convert("RGBA").getchannel("A")
    if picture.mode in ("P", "L", "RGB") and "transparency" in picture.info:
        return picture.convert("RGBA").getchannel("A")
    return None


def mask_picture(picture: Image.Image) -> Image.Image:
    """The mask as one 8-bit grey picture ("L"): the alpha when there is real transparency, else the grey level
    (16-bit, CMYK and palette pictures as a viewer shows them)."""
    alpha = alpha_channel(picture)
    if alpha is not None and alpha.getextrema()[0] < 255:
        return alpha
    if picture.mode == "L":
        return picture
    from .decode import to_rgb  # decode.py reads masks through this module, so it is imported here

    return to_rgb(picture).convert("L")


def binary_mask(picture: Image.Image) -> np.ndarray:
    """(height, width) booleans: True where the mask allows the edit."""
    return np.asarray(mask_picture(picture)) >= MASK_LEVEL


def check_mask_size(
    mask_size: tuple[int, int], image_size: tuple[int, int], field: str = "mask", image_field: str | None = None
) -> None:
    """A mask covers the main image pixel for pixel: any other (width, height) is refused, naming both sizes
    (and the image's input when `image_field` names it)."""
    if tuple(mask_size) == tuple(image_size):
        return
    width, height = mask_size
    if image_field is None:
        against = f"; it must be the size of the main image ({image_size[0]}x{image_size[1]})"
    else:
        against = f" but the image to edit ({image_field}) is {image_size[0]}x{image_size[1]} (upright)"
    raise InputError(
        field, f"is {width}x{height}{against}: a mask must be exactly the image's size, white (or opaque) where the "
        "edit may change the picture",
    )  # fmt: skip


def nothing_to_edit(field: str, why: str = "no pixel is white or opaque") -> InputError:
    """The refusal of an empty mask; `why` says by which rule it marks nothing."""
    return InputError(field, f"marks nothing to edit ({why}): the mask is empty; send no mask to edit the whole image")


@dataclass(frozen=True)
class MaskInfo:
    bounds: Box  # the smallest box holding every masked pixel
    full: bool  # every pixel is masked: the edit may change the whole picture


def check_mask(
    mask: np.ndarray, image_size: tuple[int, int], field: str = "mask", mask_size: tuple[int, int] | None = None
) -> MaskInfo:
    """Refuse a mask of another size than the main image's (width, height), or one with nothing to edit.
    mask_size: the mask file's own (width, height) when `mask` was decoded smaller; bounds are over `mask`."""
    check_mask_size(mask_size or mask.shape[::-1], image_size, field)
    bounds = mask_bounds(mask)
    if bounds is None:
        raise nothing_to_edit(field)
    return MaskInfo(bounds, bool(mask.all()))


def mask_bounds(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True pixel; None when there is none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask at another (width, height), by the nearest pixel's value (no new grey levels to threshold)."""
    if mask.shape[::-1] == tuple(size):
        return mask
    picture = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(size, Image.Resampling.NEAREST)
    return np.asarray(picture) >= MASK_LEVEL


def covered_cells(mask: np.ndarray, columns: int, rows: int) -> np.ndarray:
    """(rows, columns) booleans over a coarser grid laid on the same picture: True where any masked pixel falls
    in the cell (a latent cell is regenerated whenever part of it may change)."""
    if mask.shape == (rows, columns):
        return mask.copy()
    picture = Image.fromarray(mask.astype(np.float32), "F")
    share = np.asarray(picture.resize((columns, rows), Image.Resampling.BOX))  # the masked share of each cell
    return share > 1e-6


def box_sums(values: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel's sum over the (2 radius + 1)-square around it, the border repeated outward (int32)."""
    window = 2 * radius + 1
    sums = values.astype(np.int32)
    for axis in (0, 1):
        widths = [(0, 0), (0, 0)]
        widths[axis] = (radius + 1, radius)
        padded = np.pad(sums, widths, mode="edge")
        np.moveaxis(padded, axis, 0)[0] = 0  # a leading zero: running sums then difference to window sums
        np.cumsum(padded, axis=axis, out=padded)
        length = values.shape[axis]
        sums = padded.take(range(window, window + length), axis=axis) - padded.take(range(length), axis=axis)
    return sums


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """True within `radius` pixels (in x and y) of a True pixel."""
    return mask.copy() if radius <= 0 else box_sums(mask, radius) > 0


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """True where the whole (2 radius + 1)-square around the pixel is True."""
    return mask.copy() if radius <= 0 else box_sums(mask, radius) == (2 * radius + 1) ** 2


def cleaned(mask: np.ndarray, open_radius: int, close_radius: int) -> np.ndarray:
    """An opening (specks smaller than the square go) and then a closing (holes and gaps that small fill)."""
    opened = dilate(erode(mask, open_radius), open_radius)
    return erode(dilate(opened, close_radius), close_radius)


def feathered_alpha(region: np.ndarray, radius: int) -> np.ndarray:
    """uint8 alpha: 255 on the region, falling to 0 across the 2 radius pixels around it, and exactly 0 beyond."""
    if radius <= 0:
        return region.astype(np.uint8) * 255
    grown = dilate(region, radius)
    weights = box_sums(grown, radius)  # 0 .. (2r+1)^2; the full square on every pixel of the region
    return ((weights * 255 + (2 * radius + 1) ** 2 // 2) // (2 * radius + 1) ** 2).astype(np.uint8)
