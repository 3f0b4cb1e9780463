"""What the tools' image and zip arguments may be, turned into what the Python client sends.

A URL, a data URI or a file id of the server goes as it is (the server fetches and checks it); raw base64
is decoded and uploaded; a local path is read only where the MCP process runs on the user's own machine
(stdio): over HTTP the process is the server, and its files are not the caller's.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from ..schema import InputError

# Strings the server resolves itself (the Python client passes these through untouched).
REMOTE = re.compile(r"^(?:https?://|data:|file_[A-Za-z0-9_-]{10,40}$)", re.IGNORECASE)
BASE64 = re.compile(r"^[A-Za-z0-9+/=_-]+$")
MAX_DECODED_BYTES = 50 * 1024**2  # the server's own limit for one image; larger would be refused anyway


def image_argument(value: str, field: str, local_files: bool) -> str | bytes | Path:
    """A URL/data URI/file id (as is), a readable local file (stdio only), or the bytes of base64 text."""
    text = value.strip()
    if not text:
        raise InputError(field, "is empty: give an http(s) URL, a data: URI, base64 image bytes or a file path")
    if REMOTE.match(text):
        return text
    path = _local_path(text, field, local_files)
    if path is not None:
        return path
    decoded = _base64(text)
    if decoded is not None:
        return decoded
    if local_files:
        raise InputError(field, f"no such file: {text[:300]} (and not a URL, a data: URI or base64 image bytes)")
    raise InputError(
        field,
        "is not a URL, a data: URI or base64 image bytes; file paths are read only by the local (stdio) "
        "server, `fluxedit mcp`: over HTTP, send the image's bytes as base64 or give a URL",
    )


def zip_argument(value: str, field: str, local_files: bool) -> str | Path:
    """A training zip: an http(s) URL (the server downloads it) or, over stdio, a local .zip file."""
    text = value.strip()
    if re.match(r"^https?://", text, re.IGNORECASE):
        return text
    if not local_files:
        raise InputError(field, "must be an http(s) URL of a .zip over HTTP (local paths are read only over stdio)")
    path = _local_path(text, field, local_files)
    if path is None:
        raise InputError(field, f"no such file: {text[:300]} (give a .zip file path or an http(s) URL)")
    return path


def _local_path(text: str, field: str, local_files: bool) -> Path | None:
    if not local_files or len(text) > 4096 or "\x00" in text:
        return None
    path = Path(text).expanduser()
    try:
        if not path.exists():
            return None
    except OSError:  # a name the file system cannot even look up (too long a part, ...)
        return None
    if not path.is_file():
        raise InputError(field, f"{path} is not a file")
    return path


def _base64(text: str) -> bytes | None:
    compact = re.sub(r"\s+", "", text)
    if len(compact) < 16 or not BASE64.match(compact) or len(compact) * 3 // 4 > MAX_DECODED_BYTES:
        return None
    padded = compact + "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def edit_options(loras, **values) -> dict:
    """The edit settings a tool was given, for the SDK: what was left out takes the server's default."""
    options = {name: value for name, value in values.items() if value is not None}
    if loras:
        options["loras"] = [lora.model_dump() for lora in loras]
    return options
