"""Data URIs (data:[<mime type>][;base64],<data>): images sent inline in the same fields as URLs."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote, unquote_to_bytes

from ..schema import InputError


def parse_data_uri(uri: str, field: str, max_bytes: int) -> bytes:
    """The bytes of "data:[<mime type>][;base64],<data>", refused when malformed, empty or over max_bytes."""
    if not isinstance(uri, str) or uri[:5].lower() != "data:":
        raise InputError(field, "is not a data URI (expected data:[<mime type>][;base64],<data>)")
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise InputError(field, "is not a valid data URI: a comma must come before the data")
    too_large = InputError(field, f"is larger than {megabytes(max_bytes)} MB")
    if header.split(";")[-1].strip().lower() == "base64":
        data = _decode_base64(payload, field, max_bytes, too_large)
    else:
        if len(payload) > 3 * max_bytes:  # even all-%XX text would decode past the limit
            raise too_large
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise too_large
    if not data:
        raise InputError(field, "is an empty data URI")
    return data


def _decode_base64(payload: str, field: str, max_bytes: int, too_large: InputError) -> bytes:
    text = unquote(payload) if "%" in payload else payload  # some clients URL-encode "+", "/" and "="
    text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding anything
        raise too_large
    text = text.replace("-", "+").replace("_", "/")  # the URL-safe alphabet means the same bytes
    text += "=" * (-len(text) % 4)  # missing padding is common and harmless
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "is not valid base64 data") from None


def megabytes(size: int) -> str:
    megabytes = size / (1024 * 1024)
    return f"{megabytes:,.0f}" if megabytes >= 100 else f"{megabytes:.3g}"
