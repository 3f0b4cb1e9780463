"""Reading a mask image into the one form every layer uses: a greyscale PNG, white where the edit may change.

A caller's mask is read by one of two rules and stored (or handed to the engine) as that form, so the
engine never needs to know which dialect it came from:

- "white" (the seed API, Replicate's inpainting models, the CLI and the SDK): a picture without
  transparency counts by its brightness (white: may change, black: kept); a picture with transparency
  counts by its alpha (opaque: may change, transparent: kept).
- "transparent" (OpenAI's images.edit): a PNG with an alpha channel whose fully transparent pixels are
  the part to edit; the stored mask is 255 - alpha.

The "white" rule, the editable level (regions.MASK_LEVEL: at least half white) and the size and empty-mask
refusals are imaging/regions.py's, the ones the engine reads masks by, so the API judges a mask exactly as the
engine will. The stored form has the mask's upright size (EXIF orientation applied) and no metadata. PIL and
numpy only: the API, the CLI and the worker may all import it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageOps

from .imaging.decode import decode_admission, open_checked
from .imaging.regions import MASK_LEVEL, alpha_channel, mask_picture, nothing_to_edit
from .schema import InputError

_PEAK_BYTES_PER_PIXEL = 10  # the decoded picture (up to 4), its RGBA or RGB copy (4), the mask (1), the judgement


class MaskRule(StrEnum):
    white = "white"  # white or opaque: may change
    transparent = "transparent"  # OpenAI's: fully transparent may change


class Coverage(StrEnum):
    empty = "empty"  # nothing may change: refused
    partial = "partial"
    full = "full"  # everything may change: the plain edit


@dataclass(frozen=True)
class MaskImage:
    png: bytes  # greyscale PNG: 255 where the edit may change the picture, 0 where it is kept
    size: tuple[int, int]  # (width, height), upright
    coverage: Coverage


def read_mask(data: bytes, field: str, rule: MaskRule = MaskRule.white) -> MaskImage:
    """The mask in `data`, under the same limits as an input image; `field` names it in every refusal."""
    picture, _format = open_checked(data, field)  # the header checked as an input image's
    width, height = picture.size
    with decode_admission(width * height * _PEAK_BYTES_PER_PIXEL):
        try:
            picture.load()
            picture = ImageOps.exif_transpose(picture)
            values = _values(picture, rule, field)
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(field, f"could not be read as an image: {error}") from None
        finally:
            picture.close()
        editable = int(np.count_nonzero(values >= MASK_LEVEL))
        coverage = Coverage.empty if editable == 0 else Coverage.full if editable == values.size else Coverage.partial
        buffer = io.BytesIO()
        Image.fromarray(values, "L").save(buffer, "PNG", compress_level=1)  # masks are flat: fast and small
    return MaskImage(buffer.getvalue(), (values.shape[1], values.shape[0]), coverage)


def refuse_empty(mask: MaskImage, field: str, rule: MaskRule = MaskRule.white) -> MaskImage:
    if mask.coverage is Coverage.empty:
        why = "no pixel is transparent" if rule is MaskRule.transparent else "no pixel is white or opaque"
        raise nothing_to_edit(field, why)
    return mask


def _values(picture: Image.Image, rule: MaskRule, field: str) -> np.ndarray:
    if rule is MaskRule.white:
        return np.array(mask_picture(picture), dtype=np.uint8)  # the engine's own rule
    alpha = alpha_channel(picture)
    if alpha is None:
        raise InputError(
            field, "has no alpha channel: OpenAI's rule is a PNG whose fully transparent pixels are the part to edit"
        )
    return 255 - np.asarray(alpha, dtype=np.uint8)
