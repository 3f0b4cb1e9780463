"""POST /v1/files: upload an image to use as image_url; outputs are served under /outputs/.

The bytes are answered by api/stored_responses.py, after this module's checks (the owner, the file's state).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...schema import ACTIVE_STATUSES
from ...service.keys import Caller
from ...service.services import Services
from ...service.webhook_outbox import iso
from ...store.files import EXTENSIONS
from ...store.models import Prediction, StoredFile
from ..bodies import request_body
from ..deps import BaseUrlDep, CallerDep, ServicesDep
from ..docs import binary_response
from ..errors import SEED_ERRORS, ApiError, not_found
from ..stored_responses import stored_file_response
from ..uploads import MAX_FORM_FIELD_BYTES, MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD, store_upload
from .protocol import FileChecksums, FileUpload, FileUrls
from .protocol import StoredFile as FileView

router = APIRouter(tags=["files"], responses=SEED_ERRORS)
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
IMAGE_BYTES = binary_response("The image", *IMAGE_TYPES)


def file_view(record: StoredFile, base: str) -> FileView:
    """Also the Replicate file object (etag, metadata, expires_at, urls.get): its client uploads here too."""
    content = f"{base}/v1/files/{record.id}/content"
    return FileView(
        id=record.id,
        name=record.filename,
        content_type=record.content_type,
        size=record.size,
        etag=record.sha256,
        checksums=FileChecksums(sha256=record.sha256),
        metadata={},
        width=record.width,
        height=record.height,
        created_at=iso(record.created_at),
        expires_at=None,
        url=f"{base}/v1/files/{record.id}",
        urls=FileUrls(get=f"{base}/v1/files/{record.id}", content=content),
    )


@router.post("/v1/files", status_code=201, openapi_extra=request_body(("multipart/form-data", FileUpload)))
async def upload_file(request: Request, found: ServicesDep, who: CallerDep, base: BaseUrlDep) -> FileView:
    """Multipart upload (field `file` or `content`), JPEG, PNG or WebP up to 50 MB."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
        raise ApiError(413, "file: is larger than 50 MB")
    try:  # read here, not by FastAPI: the body is counted while it streams (body_limit.py), the file spooled to disk
        form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_FORM_FIELD_BYTES)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart upload ({error.message})") from None
    upload = form.get("file") or form.get("content")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "file: is required (a multipart field named 'file' holding the image)")
    record = await store_upload(found, who, upload)
    return file_view(record, base)


def _owned_file(found: Services, who: Caller, file_id: str) -> StoredFile:
    record = found.files.get(file_id)
    if record is None or record.owner_key_id != who.key_id:
        raise not_found(f"file {file_id}")
    return record


def _unfinished_user(found: Services, who: Caller, file_id: str) -> str | None:
    """A prediction of this key, not yet ended, that has the file as an input (it would fail without it)."""
    owned = Prediction.owner_key_id.is_(None) if who.key_id is None else Prediction.owner_key_id == who.key_id
    query = select(Prediction.id, Prediction.input_files).where(owned, Prediction.status.in_(ACTIVE_STATUSES))
    with found.sessions() as session:
        for prediction_id, input_files in session.execute(query):
            if file_id in (input_files or []):
                return prediction_id
    return None


@router.get("/v1/files/{file_id}")
async def get_file(found: ServicesDep, who: CallerDep, file_id: str, base: BaseUrlDep) -> FileView:
    return file_view(_owned_file(found, who, file_id), base)


@router.get("/v1/files/{file_id}/content", response_class=FileResponse, responses=IMAGE_BYTES)
async def get_file_content(found: ServicesDep, who: CallerDep, file_id: str) -> Response:
    record = _owned_file(found, who, file_id)
    return await stored_file_response(found, record, f"file {file_id}", filename=record.filename)


@router.delete("/v1/files/{file_id}", status_code=204)
async def delete_file(found: ServicesDep, who: CallerDep, file_id: str) -> None:
    """Deletes an upload, an input or an output. A prediction that had it shows `data_removed: true` and
    leaves it out of its output; one still queued or running keeps its inputs (409 until it ends)."""
    _owned_file(found, who, file_id)
    user = _unfinished_user(found, who, file_id)
    if user is not None:
        raise ApiError(409, f"file {file_id} is an input of prediction {user}, which has not ended: "
                       "cancel it or wait for its end, then delete the file")  # fmt: skip
    found.files.delete(file_id)


@router.get("/outputs/{name}", response_class=FileResponse, responses=IMAGE_BYTES)
async def get_output(found: ServicesDep, name: str) -> Response:
    """An output image. Its random id is the capability: it can be shown in an <img> without a key."""
    file_id, _, extension = name.rpartition(".")
    record = found.files.get(file_id)
    if record is None or record.purpose != "output" or EXTENSIONS.get(record.content_type) != extension:
        raise not_found(f"output {name}")
    immutable = {"Cache-Control": "public, max-age=31536000, immutable"}
    return await stored_file_response(found, record, f"output {name}", headers=immutable)
