"""Builders for test inputs: pictures of every kind, encoded as real files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from fluxedit.schema import EditSettings, validated_settings


def pattern(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with structure (not flat), so resizes and rotations show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 32, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def encoded(picture: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height zeros that compresses to a few kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def settings(**overrides) -> EditSettings:
    """Fast, seeded edit settings for the tiny model."""
    fields = {"prompt": "make it blue", "num_inference_steps": 2, "seed": 1234}
    fields.update(overrides)
    return validated_settings(**fields)
