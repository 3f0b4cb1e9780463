"""/v1/loras: register a LoRA file under a name, list them, delete one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...schema import InputError
from ...service.loras import NAME
from ...service.webhook_outbox import iso
from ...store.models import LoraName
from ..bodies import request_body
from ..deps import CallerDep, ServicesDep
from ..errors import SEED_ERRORS, ApiError, not_found
from ..uploads import MAX_FORM_FIELD_BYTES
from .protocol import Lora, LoraList, LoraUpload, LoraUsage, LoraUse

router = APIRouter(prefix="/v1/loras", tags=["loras"], responses=SEED_ERRORS)


def lora_view(record: LoraName) -> Lora:
    return Lora(
        id=record.id,
        name=record.name,
        size=record.size,
        sha256=record.sha256,
        created_at=iso(record.created_at),
        usage=LoraUsage(loras=[LoraUse(path=record.name, scale=1.0)]),
    )


@router.post("", status_code=201, openapi_extra=request_body(("multipart/form-data", LoraUpload)))
async def upload_lora(request: Request, found: ServicesDep, who: CallerDep) -> Lora:
    """Multipart: `file` (a .safetensors LoRA, up to 2 GB by default) and `name` (how requests refer to it)."""
    store = found.loras
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > store.max_bytes + 64 * 1024:
        raise ApiError(413, f"file: is larger than {store.max_bytes // 2**20} MB")
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_FORM_FIELD_BYTES)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart upload ({error.message})") from None
    upload, name = form.get("file"), form.get("name")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "file: is required (a multipart field named 'file' holding the .safetensors file)")
    if not isinstance(name, str) or not name:
        raise ApiError(422, "name: is required (how predictions will refer to this LoRA)")
    if not NAME.match(name):  # before the file is written: a refused name leaves nothing behind
        raise InputError("name", "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if store.find(who, name) is not None:
        raise ApiError(409, f"name: a LoRA named {name!r} exists already; delete it first")
    temporary, sink = store.temporary()
    try:
        with sink:
            written = 0
            while chunk := await upload.read(1 << 20):
                written += len(chunk)
                if written > store.max_bytes:
                    raise ApiError(413, f"file: is larger than {store.max_bytes // 2**20} MB")
                await asyncio.to_thread(sink.write, chunk)  # up to 2 GB: the disk's pace, not the event loop's
        sha256, size = await asyncio.to_thread(store.add, temporary, "file", True, who.key_id)
    finally:
        temporary.unlink(missing_ok=True)
    try:
        return lora_view(store.register(who, name, sha256, size))
    except InputError:  # the name was taken meanwhile: the file is kept only if another name holds it
        await asyncio.to_thread(store.release, sha256)
        raise


@router.get("")
async def list_loras(found: ServicesDep, who: CallerDep) -> LoraList:
    return LoraList(data=[lora_view(record) for record in found.loras.names(who)])


@router.get("/{name}")
async def get_lora(found: ServicesDep, who: CallerDep, name: str) -> Lora:
    record = found.loras.find(who, name)
    if record is None:
        raise not_found(f"LoRA {name}")
    return lora_view(record)


@router.delete("/{name}", status_code=204)
async def delete_lora(found: ServicesDep, who: CallerDep, name: str) -> None:
    store = found.loras
    record = store.find(who, name)
    if record is None:
        raise not_found(f"LoRA {name}")
    await asyncio.to_thread(store.unregister, record)  # may delete files of up to 2 GB: off the loop
