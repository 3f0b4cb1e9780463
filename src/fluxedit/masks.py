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
import threading
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .imaging.decode import ACCEPTED_FORMATS, MAX_ASPECT, MIN_SIDE, decoding_limits
from .imaging.decode_budget import DecodeBudget
from .imaging.regions import MASK_LEVEL, alpha_channel, mask_picture, nothing_to_edit
from .schema import InputError

_PEAK_BYTES_PER_PIXEL = 10  # the decoded picture (up to 4), its RGBA or RGB copy (4), the mask (1), the judgement
_budget_lock = threading.Lock()
_budget: DecodeBudget | None = None


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
    picture = _open(data, field)
    width, height = picture.size
    with _decode_budget().admitted(width * height * _PEAK_BYTES_PER_PIXEL):
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


def _open(data: bytes, field: str) -> Image.Image:
    """The header read and checked like an input image's: format, pixels, sides, aspect."""
    if not data:
        raise InputError(field, "is empty (0 bytes)")
    max_pixels = decoding_limits().max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(field, f"has more than {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise InputError(field, "is not an image (JPEG, PNG and WebP are accepted)") from None
    if picture.format not in ACCEPTED_FORMATS:
        raise InputError(field, f"is a {picture.format or 'unknown'} image; only JPEG, PNG and WebP are accepted")
    width, height = picture.size
    if width * height > max_pixels:
        raise InputError(field, f"is {width}x{height}, more than {max_pixels:,} pixels; scale it down first")
    if min(width, height) < MIN_SIDE or max(width, height) / min(width, height) > MAX_ASPECT:
        raise InputError(field, f"is {width}x{height}: not the size of an image this server edits")
    return picture


def _values(picture: Image.Image, rule: MaskRule, field: str) -> np.ndarray:
    if rule is MaskRule.white:
        return np.array(mask_picture(picture), dtype=np.uint8)  # the engine's own rule
    alpha = alpha_channel(picture)
    if alpha is None:
        raise InputError(
            field, "has no alpha channel: OpenAI's rule is a PNG whose fully transparent pixels are the part to edit"
        )
    return 255 - np.asarray(alpha, dtype=np.uint8)


def _decode_budget() -> DecodeBudget:
    """Masks decode one at a time, within the memory limit images decode in (FLUXEDIT_DECODE_MEMORY_BYTES)."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = DecodeBudget(decoding_limits().memory_bytes, 1)
        return _budget
