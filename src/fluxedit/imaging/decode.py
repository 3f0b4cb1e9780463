"""Read an input image from bytes into a plain 8-bit RGB picture, or refuse it clearly.

Handles what real files contain: EXIF orientation, palette and alpha (composited
on white), CMYK (through its ICC profile when it has one), greyscale and 16-bit.
The format is detected from the bytes, never from a file name.

Decoding is bounded, because a small file can hold a huge picture: its size is
checked from the header before anything is decoded (FLUXEDIT_MAX_INPUT_PIXELS);
the memory the decode takes is estimated from the header and admitted against a
budget shared by every decode of the process (FLUXEDIT_DECODE_MEMORY_BYTES, at
most FLUXEDIT_DECODE_CONCURRENCY at once); a large picture is kept only at the
size the model needs (model_size.py), and a JPEG is even decoded at that scale.
"""

from __future__ import annotations

import asyncio
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from ..config import Settings
from ..schema import InputError, OutputFormat
from .composite import check_output_pixels
from .decode_budget import DecodeBudget, release_free_memory
from .model_size import model_size
from .regions import mask_picture

ACCEPTED_FORMATS = {"JPEG": OutputFormat.jpeg, "PNG": OutputFormat.png, "WEBP": OutputFormat.webp}
MAX_PIXELS = Settings.model_fields["max_input_pixels"].default  # 120 MP: a 12000 x 10000 camera file
MIN_SIDE = 16
MAX_ASPECT = 4.0  # beyond 4:1 the stretch to a trained size destroys the picture
ORIENTATION = 0x0112
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIDEWAYS = {5, 6, 7, 8}  # orientations whose upright picture swaps width and height
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}  # Pillow keeps the rest in 4
_CONVERTED_BEFORE_RESIZE = {"1": "L", "P": "RGBA", "PA": "RGBA"}  # Pillow resizes these by nearest pixel only
_DECODED_COPIES = {"WEBP": 4}  # libwebp's two canvases, the frame's bytes, Pillow's picture (measured: 4.0x)
REDUCING_GAP = 2.0  # a box reduce first while the picture stays twice the target: fast, and the engine resizes again
_TRIM_ABOVE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB (a mask: L), 8-bit, upright; downscaled to what the model needs (model_size.py)
    format: OutputFormat  # the format the bytes were in
    source_size: tuple[int, int] | None = None  # (width, height) of the file's upright picture; None: image.size

    @property
    def original_size(self) -> tuple[int, int]:
        return self.source_size or self.image.size


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    memory_bytes: int
    concurrency: int


class _Decoding:
    """One process's limits, the budget they admit decodes against, and the threads decodes run in."""

    def __init__(self, limits: DecodeLimits):
        self.limits = limits
        self.budget = DecodeBudget(limits.memory_bytes, limits.concurrency)
        self.executor = ThreadPoolExecutor(limits.concurrency, thread_name_prefix="decode")


_current: _Decoding | None = None
_current_lock = threading.Lock()


def configure_decoding(max_pixels: int, memory_bytes: int, concurrency: int) -> None:
    """Set this process's limits (the server does, from its Settings); until then they come from FLUXEDIT_*."""
    global _current
    with _current_lock:
        previous, _current = _current, _Decoding(DecodeLimits(max_pixels, memory_bytes, concurrency))
    if previous is not None:
        previous.executor.shutdown(wait=False)  # what it runs finishes within its own budget


def decoding_limits() -> DecodeLimits:
    return _decoding().limits


def _decoding() -> _Decoding:
    global _current
    with _current_lock:
        if _current is None:
            settings = Settings()
            limits = DecodeLimits(settings.max_input_pixels, settings.decode_memory_bytes, settings.decode_concurrency)
            _current = _Decoding(limits)
        return _current


async def decode_image_async(data: bytes, field: str = "image") -> DecodedImage:
    """decode_image off the event loop, in the process's decode threads (FLUXEDIT_DECODE_CONCURRENCY of them)."""
    decoding = _decoding()
    return await asyncio.get_running_loop().run_in_executor(decoding.executor, decode_image, data, field)


def decode_image(data: bytes, field: str = "image", full_size: bool = False, as_mask: bool = False) -> DecodedImage:
    """Decode `data` in this thread, once the process's decode budget admits it; `field` names the input in errors.

    full_size keeps every pixel (for output_resolution "input": at most composite.MAX_OUTPUT_PIXELS, else an
    InputError naming output_resolution). as_mask reads an edit mask: a grey "L" picture, from the alpha when
    there is transparency, else from the grey level (regions.mask_picture), instead of RGB on white."""
    decoding = _decoding()
    picture, detected = open_checked(data, field)
    source_size = picture.size
    if full_size:
        check_output_pixels(*source_size)
    orientation = _orientation(picture) if picture.format == "JPEG" else 1  # a JPEG's EXIF comes with its header
    if not full_size:
        _draft(picture, orientation)
    cost = estimated_decode_bytes(picture, full_size)
    if cost > decoding.limits.memory_bytes:
        width, height = source_size
        raise InputError(
            field,
            f"is {width}x{height}: decoding it takes about {_mb(cost)} MB, more than the "
            f"{_mb(decoding.limits.memory_bytes)} MB this server decodes at once; scale it down first",
        )
    with decoding.budget.admitted(cost):
        decoded = None
        try:
            decoded = _decoded(picture, detected, source_size, field, full_size, as_mask)
        finally:
            if decoded is None or decoded.image is not picture:
                picture.close()  # its full-size pixels are freed now, within the admission
            if cost > _TRIM_ABOVE_BYTES:
                release_free_memory()
    return decoded


def decode_admission(estimated_bytes: int) -> AbstractContextManager[None]:
    """Hold `estimated_bytes` of this process's decode budget (FLUXEDIT_DECODE_MEMORY_BYTES) while decoding
    something other than an input image (a mask): images and masks share one memory limit."""
    return _decoding().budget.admitted(estimated_bytes)


def estimated_decode_bytes(picture: Image.Image, full_size: bool = False) -> int:
    """Memory a decode of this (opened, not yet loaded) picture takes at its peak, from its header alone."""
    width, height = picture.size
    pixels = width * height
    decoded = pixels * _BYTES_PER_PIXEL.get(picture.mode, 4) * _DECODED_COPIES.get(picture.format or "", 1)
    target = None if full_size else model_size(width, height)  # orientation aside: the larger side counts below
    if target is None:
        return decoded + 2 * pixels * 4  # converted to RGB and turned upright at full size
    target_width, target_height = max(target), min(target)
    converted = pixels * 4 if picture.mode in _CONVERTED_BEFORE_RESIZE else 0
    # Pillow's resize: a box reduce by whole factors first, then one pass per axis (width first).
    factor_x = max(1, int(max(width, height) / target_width / REDUCING_GAP))
    factor_y = max(1, int(min(width, height) / target_height / REDUCING_GAP))
    reduced_height = -(-max(width, height) // min(factor_x, factor_y))
    reduced = pixels // (factor_x * factor_y) * 4 if factor_x * factor_y > 1 else 0
    first_pass = target_width * reduced_height * 4
    return decoded + converted + reduced + first_pass + 2 * target_width * target_height * 4


def open_checked(data: bytes, field: str) -> tuple[Image.Image, OutputFormat]:
    """Read the header and refuse what must not be decoded, under this process's limits: nothing of the
    picture is decoded yet. Images and masks alike are opened here."""
    max_pixels = _decoding().limits.max_pixels
    if not data:
        raise InputError(field, "is empty (0 bytes)")
    picture = _open(data, field, max_pixels)
    detected = ACCEPTED_FORMATS.get(picture.format or "")
    if detected is None:
        raise InputError(field, f"is a {picture.format or 'unknown'} image; only JPEG, PNG and WebP are accepted")
    _check_geometry(picture.size, field, max_pixels)  # pixels, sides and aspect do not depend on orientation
    return picture, detected


def _draft(picture: Image.Image, orientation: int) -> None:
    """A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at least the size the model needs."""
    if picture.format != "JPEG":
        return
    target = model_size(*_upright(picture.size, orientation))
    if target is not None:
        picture.draft(picture.mode, _upright(target, orientation))  # _upright turns a size either way


def _decoded(
    picture: Image.Image,
    detected: OutputFormat,
    source_size: tuple[int, int],
    field: str,
    full_size: bool,
    as_mask: bool,
) -> DecodedImage:
    try:
        picture.load()
        orientation = _orientation(picture)
        upright_source = _upright(source_size, orientation)
        target = None if full_size else model_size(*upright_source)
        if target is not None:
            picture = _resized(picture, _upright(target, orientation))
        if orientation in _TRANSPOSES:
            picture = picture.transpose(_TRANSPOSES[orientation])
        converted = mask_picture(picture) if as_mask else to_rgb(picture)
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(field, f"could not be read as {detected.value.upper()}: {error}") from None
    return DecodedImage(converted, detected, upright_source)


def model_view(picture: Image.Image) -> Image.Image:
    """A full-size upright picture as a model-size decode keeps it (model_size.py): what the model sees of it."""
    target = model_size(*picture.size)
    return picture if target is None else _resized(picture, target)


def _resized(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    if picture.mode in _CONVERTED_BEFORE_RESIZE:
        picture = picture.convert(_CONVERTED_BEFORE_RESIZE[picture.mode])
    if picture.size == size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)  # a box reduce first: fast


def _orientation(picture: Image.Image) -> int:
    orientation = picture.getexif().get(ORIENTATION, 1)
    return orientation if isinstance(orientation, int) else 1


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _SIDEWAYS else size


def _mb(size: int) -> int:
    return -(-size // 2**20)


def _open(data: bytes, field: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(field, f"has more than {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise InputError(field, "is not an image (JPEG, PNG and WebP are accepted)") from None


def _check_geometry(size: tuple[int, int], field: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(field, f"is {width}x{height}, more than {max_pixels:,} pixels; scale it down first")
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
