"""Read an input image from bytes into a plain 8-bit RGB picture, or refuse it clearly.

Handles what real files contain: EXIF orientation, palette and alpha (composited
on white), CMYK (through its ICC profile when it has one), greyscale and 16-bit.
The format is detected from the bytes, never from a file name.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..schema import InputError, OutputFormat

ACCEPTED_FORMATS = {"JPEG": OutputFormat.jpeg, "PNG": OutputFormat.png, "WEBP": OutputFormat.webp}
MAX_PIXELS = 144_000_000  # 12000 x 12000; beyond this, decoding alone needs too much memory
MIN_SIDE = 16
MAX_ASPECT = 4.0  # beyond 4:1 the stretch to a trained size destroys the picture


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, 8-bit, upright
    format: OutputFormat  # the format the bytes were in


def decode_image(data: bytes, field: str = "image") -> DecodedImage:
    """Decode `data`; `field` names the input in error messages."""
    if not data:
        raise InputError(field, "is empty (0 bytes)")
    picture = _open(data, field)
    detected = ACCEPTED_FORMATS.get(picture.format or "")
    if detected is None:
        raise InputError(field, f"is a {picture.format or 'unknown'} image; only JPEG, PNG and WebP are accepted")
    _check_geometry(picture.size, field)
    try:
        picture.load()
        picture = ImageOps.exif_transpose(picture)
        rgb = to_rgb(picture)
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(field, f"could not be read as {picture.format}: {error}") from None
    _check_geometry(rgb.size, field)
    return DecodedImage(rgb, detected)


def _open(data: bytes, field: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(field, f"has more than {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise InputError(field, "is not an image (JPEG, PNG and WebP are accepted)") from None


def _check_geometry(size: tuple[int, int], field: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise InputError(field, f"is {width}x{height}, more than {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise InputError(field, f"is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise InputError(
            field,
            f"is {width}x{height} (aspect {aspect:.1f}:1); at most {MAX_ASPECT:g}:1 is accepted, crop it first",
        )


def to_rgb(picture: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a viewer would show it."""
    mode = picture.mode
    if mode == "RGB":
        return picture
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return _sixteen_bit_grey_to_rgb(picture)
    if mode == "F":
        values = np.clip(np.asarray(picture, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(values, "L").convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(picture)
    if mode == "P":
        picture = picture.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(picture.convert("RGBA"))
    return picture.convert("RGB")


def _sixteen_bit_grey_to_rgb(picture: Image.Image) -> Image.Image:
    # Pillow's own convert clips 16-bit values at 255 (a white picture); scale instead.
    values = np.asarray(picture, dtype=np.uint32)
    eight_bit = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(eight_bit, "L").convert("RGB")


def _cmyk_to_rgb(picture: Image.Image) -> Image.Image:
    profile = picture.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(picture, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to the plain conversion below
    return picture.convert("RGB")


def _composite_on_white(picture: Image.Image) -> Image.Image:
    background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, picture).convert("RGB")
