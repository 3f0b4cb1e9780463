"""Encode result images as JPEG, PNG or WebP, with the edit's settings embedded.

The settings travel as one JSON object: a PNG text chunk ("fluxedit"), or the
EXIF ImageDescription of a JPEG/WebP (ASCII-escaped JSON, so any prompt fits).
"""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from ..schema import OutputFormat

METADATA_KEY = "fluxedit"
EXIF_SOFTWARE = 0x0131
EXIF_IMAGE_DESCRIPTION = 0x010E
SOFTWARE = "fluxedit"


def encode_image(image: Image.Image, fmt: OutputFormat, quality: int = 90, metadata: dict | None = None) -> bytes:
    """Encode `image`; `metadata` (JSON-serialisable) is embedded when given."""
    buffer = io.BytesIO()
    text = json.dumps(metadata, ensure_ascii=True, sort_keys=True) if metadata is not None else None
    if fmt is OutputFormat.png:
        info = PngImagePlugin.PngInfo()
        if text is not None:
            info.add_text(METADATA_KEY, text)
            info.add_text("Software", SOFTWARE)
        image.save(buffer, "PNG", pnginfo=info, compress_level=4)
    else:
        exif = Image.Exif()
        if text is not None:
            exif[EXIF_SOFTWARE] = SOFTWARE
            exif[EXIF_IMAGE_DESCRIPTION] = text
        pillow_format = "JPEG" if fmt is OutputFormat.jpeg else "WEBP"
        image.save(buffer, pillow_format, quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def read_metadata(data: bytes) -> dict | None:
    """The settings embedded by `encode_image`, or None when the file carries none."""
    with Image.open(io.BytesIO(data)) as picture:
        if picture.format == "PNG":
            text = picture.text.get(METADATA_KEY)
        else:
            exif = picture.getexif()
            text = exif.get(EXIF_IMAGE_DESCRIPTION) if exif.get(EXIF_SOFTWARE) == SOFTWARE else None
    return json.loads(text) if text else None
