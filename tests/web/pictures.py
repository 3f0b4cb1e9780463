"""Input pictures for the browser tests: a small landscape that reads as a photo in the screenshot."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def landscape(width: int = 800, height: int = 600) -> Image.Image:
    """Sky, sun, two mountain ranges and a lake: drawn in code, the same every time."""
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([255, 170, 110]) + y * np.array([120, 150, 220])
    picture = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    sun = (int(width * 0.68), int(height * 0.36), int(height * 0.09))
    draw.ellipse([sun[0] - sun[2], sun[1] - sun[2], sun[0] + sun[2], sun[1] + sun[2]], fill=(255, 236, 180))
    far = [
        (0, height * 0.55),
        (width * 0.2, height * 0.38),
        (width * 0.42, height * 0.52),
        (width * 0.62, height * 0.34),
    ]
    far += [(width * 0.85, height * 0.5), (width, height * 0.42), (width, height), (0, height)]
    draw.polygon(far, fill=(96, 92, 140))
    near = [
        (0, height * 0.7),
        (width * 0.3, height * 0.52),
        (width * 0.55, height * 0.68),
        (width * 0.8, height * 0.56),
    ]
    near += [(width, height * 0.66), (width, height), (0, height)]
    draw.polygon(near, fill=(52, 84, 90))
    draw.rectangle([0, height * 0.8, width, height], fill=(70, 110, 160))
    return picture.filter(ImageFilter.GaussianBlur(1.2))


def encode(picture: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt)
    return buffer.getvalue()
