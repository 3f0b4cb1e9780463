"""POST /v1/files: upload an image to use as image_url; outputs are served under /outputs/."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...service.keys import Caller
from ...service.services import Services
from ...store.files import EXTENSIONS
from ...store.models import StoredFile
from ..deps import base_url, caller, services
from ..errors import ApiError, not_found
from ..uploads import MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD, store_upload
from .views import iso

router = APIRouter(tags=["files"])


def file_view(record: StoredFile, base: str) -> dict:
    """Also the Replicate file object (etag, metadata, expires_at, urls.get): its client uploads here too."""
    content = f"{base}/v1/files/{record.id}/content"
    return {
        "id": record.id,
        "name": record.filename,
        "content_type": record.content_type,
        "size": record.size,
        "etag": record.sha256,
        "checksums": {"sha256": record.sha256},
        "metadata": {},
        "width": record.width,
        "height": record.height,
        "created_at": iso(record.created_at),
        "expires_at": None,
        "url": f"{base}/v1/files/{record.id}",
        "urls": {"get": f"{base}/v1/files/{record.id}", "content": content},
    }


@router.post("/v1/files", status_code=201)
async def upload_file(request: Request, who: Caller = Depends(caller)) -> dict:
    """Multipart upload (field `file` or `content`), JPEG, PNG or WebP up to 50 MB."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
        raise ApiError(413, "file: is larger than 50 MB")
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_UPLOAD_BYTES + 1)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart upload ({error.message})") from None
    upload = form.get("file") or form.get("content")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "file: is required (a multipart field named 'file' holding the image)")
    record = await store_upload(services(request), who, upload)
    return file_view(record, base_url(request))


def _owned_file(found: Services, who: Caller, file_id: str) -> StoredFile:
    record = found.files.get(file_id)
    if record is None or record.owner_key_id != who.key_id:
        raise not_found(f"file {file_id}")
    return record


@router.get("/v1/files/{file_id}")
async def get_file(request: Request, file_id: str, who: Caller = Depends(caller)) -> dict:
    return file_view(_owned_file(services(request), who, file_id), base_url(request))


@router.get("/v1/files/{file_id}/content")
async def get_file_content(request: Request, file_id: str, who: Caller = Depends(caller)) -> FileResponse:
    found = services(request)
    record = _owned_file(found, who, file_id)
    return FileResponse(found.files.path(file_id), media_type=record.content_type, filename=record.filename)


@router.delete("/v1/files/{file_id}", status_code=204)
async def delete_file(request: Request, file_id: str, who: Caller = Depends(caller)) -> None:
    found = services(request)
    _owned_file(found, who, file_id)
    found.files.delete(file_id)


@router.get("/outputs/{name}")
async def get_output(request: Request, name: str) -> FileResponse:
    """An output image. Its random id is the capability: it can be shown in an <img> without a key."""
    file_id, _, extension = name.rpartition(".")
    found = services(request)
    record = found.files.get(file_id)
    if record is None or record.purpose != "output" or EXTENSIONS.get(record.content_type) != extension:
        raise not_found(f"output {name}")
    return FileResponse(
        found.files.path(file_id),
        media_type=record.content_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
