"""A stored file's bytes as an HTTP response, wherever the store keeps them.

Bytes on this machine's disk are sent as files; bytes in an object store (S3) are streamed through, or, with
FLUXEDIT_S3_PRESIGNED_SECONDS set, answered by a 307 to a presigned URL of the bucket. Used for uploads,
outputs and trainings' files alike.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from ..service.services import Services
from ..store.models import StoredFile
from .errors import ApiError


async def stored_file_response(
    found: Services, record: StoredFile, what: str, *, filename: str | None = None, headers: dict | None = None
) -> Response:
    """The file's bytes as a response, or 404 when they are gone (deleted by hand, lost): never a 500."""
    files = found.files
    path = files.local_path(record.id)
    if path is not None:
        if not path.is_file():
            raise ApiError(404, f"{what} not found: its data was removed from this server")
        return FileResponse(path, media_type=record.content_type, filename=filename, headers=headers)
    seconds = found.settings.s3_presigned_seconds
    if seconds and (url := await asyncio.to_thread(files.presigned_url, record, seconds, filename)):
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    if not await asyncio.to_thread(files.has_bytes, record.id):
        raise ApiError(404, f"{what} not found: its data was removed from this server")
    disposition = {"Content-Disposition": _attachment(filename)} if filename else {}
    sized = {"Content-Length": str(record.size)}
    return StreamingResponse(
        files.chunks(record.id), media_type=record.content_type, headers={**(headers or {}), **disposition, **sized}
    )  # a blocking iterator: Starlette reads it in a thread


def _attachment(filename: str) -> str:
    """The Content-Disposition a FileResponse sends for the same name."""
    quoted = quote(filename)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != filename else f'attachment; filename="{filename}"'
