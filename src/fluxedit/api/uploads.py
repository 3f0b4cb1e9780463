"""Uploaded images: read with a size cap, decoded (so only real images are kept), then stored."""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile

from ..imaging.decode import decode_image_async
from ..masks import MaskRule, read_mask, refuse_empty
from ..service.keys import Caller
from ..service.services import Services
from ..store.files import CONTENT_TYPES
from ..store.models import StoredFile
from .errors import ApiError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024
# A form's text fields are held in memory (files stream to disk): each at most this, whatever the file limit.
MAX_FORM_FIELD_BYTES = 1024 * 1024


async def read_capped(upload: UploadFile, field: str = "file") -> bytes:
    chunks, total = [], 0
    while chunk := await upload.read(1024 * 1024):
        total += len(chunk)
        if total > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"{field}: is larger than 50 MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def store_upload(services: Services, who: Caller, upload: UploadFile, field: str = "file") -> StoredFile:
    data = await read_capped(upload, field)
    decoded = await decode_image_async(data, field)  # off the loop, within the decode budget
    return await asyncio.to_thread(
        services.files.put,
        data,
        purpose="upload",
        content_type=CONTENT_TYPES[decoded.format.value],
        filename=upload.filename or "upload",
        owner_key_id=who.key_id,
        size=decoded.original_size,
    )


async def store_mask_upload(services: Services, who: Caller, upload: UploadFile, field: str) -> StoredFile:
    """An uploaded mask in OpenAI's rule (fully transparent: the part to edit), stored in our greyscale form
    (masks.py: white may change), so it then goes the way of any mask_url."""
    data = await read_capped(upload, field)
    mask = refuse_empty(await asyncio.to_thread(read_mask, data, field, MaskRule.transparent), field,
                        MaskRule.transparent)  # fmt: skip
    return await asyncio.to_thread(
        services.files.put, mask.png, purpose="upload", content_type=CONTENT_TYPES["png"],
        filename=upload.filename or "mask.png", owner_key_id=who.key_id, size=mask.size,
    )  # fmt: skip
