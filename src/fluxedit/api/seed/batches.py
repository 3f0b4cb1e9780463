"""/v1/batches: one edit template over many images (URLs, file ids or a zip), run as ordinary predictions."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...schema import InputError
from ...service.batch_results import results_zip
from ...service.batch_views import batch_document, batch_items, summaries
from ...service.batch_zip import BatchImage, read_batch_zip
from ...service.batches import BatchNotFound
from ...service.keys import Caller
from ...service.services import Services
from ...store.models import Batch
from ..bodies import NoBody, json_body, request_body
from ..deps import BaseUrlDep, CallerDep, OwnHostsDep, ServicesDep
from ..docs import binary_response
from ..errors import SEED_ERRORS, ApiError, not_found
from ..uploads import MAX_FORM_FIELD_BYTES
from .protocol import BatchItem, BatchItems, BatchList, BatchRequest, BatchUpload, BatchView

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=SEED_ERRORS)
MAX_ZIP_BYTES = 2 * 1024**3  # a batch's zip upload, as a training's (api/body_limit.py)
BATCH_BODY = request_body(("application/json", BatchRequest), ("multipart/form-data", BatchUpload))
RESULTS = binary_response("The outputs so far, named after their inputs, and manifest.csv", "application/zip")
MAX_ITEMS_PAGE = 500


def batch_view(found: Services, batch: Batch, base: str) -> BatchView:
    with found.sessions() as session:
        summary = summaries(session, [batch])[0]
    return BatchView.model_validate(batch_document(summary, base))


def _owned(found: Services, who: Caller, batch_id: str) -> Batch:
    try:
        return found.batches.get(who, batch_id)
    except BatchNotFound:
        raise not_found(f"batch {batch_id}") from None


@router.post("", status_code=201, openapi_extra=BATCH_BODY)
async def create_batch(
    request: Request, found: ServicesDep, who: CallerDep, base: BaseUrlDep, hosts: OwnHostsDep
) -> BatchView:
    """JSON: `{"input": {template}, "images": [URL | file id | {image, prompt, name}, ...]}`; or multipart: `data`
    (a .zip of images, with an optional prompts.csv or prompts.jsonl) and `input` (the template as JSON text).
    Each image becomes one prediction; the batch is taken whole or refused whole."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        batch = await _create_from_zip(request, found, who, base, hosts)
    else:
        body = BatchRequest.model_validate(await json_body(request))
        images = [BatchImage(item) if isinstance(item, str) else BatchImage(item.image, item.prompt, item.name)
                  for item in body.images]  # fmt: skip
        batch = await found.batches.create(
            who, body.input, images, base_url=base, own_hosts=hosts, webhook_url=body.webhook_url,
            webhook_secret=body.webhook_secret, prediction_webhooks=body.prediction_webhooks,
        )  # fmt: skip
    return batch_view(found, batch, base)


async def _create_from_zip(request: Request, found: Services, who: Caller, base: str, hosts: set[str]) -> Batch:
    found.batches.admit(who, 1)  # a refused caller costs no upload: rate, workers, the batch queues
    try:  # read here, not by FastAPI: counted while it streams (body_limit.py), the zip written as it comes
        form = await request.form(max_files=1, max_fields=16, max_part_size=MAX_FORM_FIELD_BYTES)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart upload ({error.message})") from None
    upload = form.get("data")
    if not isinstance(upload, UploadFile):
        raise InputError("data", "is required: a .zip of JPEG, PNG or WebP images")
    template = _template(form.get("input"))
    webhook_url = _text(form, "webhook_url")
    prediction_webhooks = (_text(form, "prediction_webhooks") or "false").lower()
    if prediction_webhooks not in ("true", "false"):
        raise InputError("prediction_webhooks", f"must be true or false (got {prediction_webhooks[:20]!r})")
    folder = found.settings.data_dir / "batches"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / f"upload-{secrets.token_hex(8)}.zip"
    try:
        with zip_path.open("wb") as sink:
            while chunk := await upload.read(1 << 20):
                await asyncio.to_thread(sink.write, chunk)
        found.batches.check_template(template, who, webhook_url)  # before the images are stored, not after
        images, skipped = await asyncio.to_thread(
            read_batch_zip, zip_path, found.files, who, found.batches.limits.max_images
        )
    finally:
        zip_path.unlink(missing_ok=True)
    return await found.batches.create(
        who, template, images, base_url=base, own_hosts=hosts, webhook_url=webhook_url,
        webhook_secret=_text(form, "webhook_secret"), prediction_webhooks=prediction_webhooks == "true",
        skipped=skipped, admitted=True, images_field="data",
    )  # fmt: skip


def _template(value) -> dict:
    if not isinstance(value, str) or not value.strip():
        raise InputError("input", 'is required: the template as JSON text, e.g. {"prompt": "..."}')
    try:
        template = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise InputError("input", "is not valid JSON text") from None
    if not isinstance(template, dict):
        raise InputError("input", "must be a JSON object: the prompt and settings for every image")
    return template


def _text(form, field: str) -> str | None:
    value = form.get(field)
    if value is not None and not isinstance(value, str):
        raise InputError(field, "must be a text field")
    return value or None


@router.get("")
async def list_batches(
    request: Request,
    found: ServicesDep,
    who: CallerDep,
    base: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> BatchList:
    """The caller's batches, newest first; `next_cursor` fetches the next page."""
    page = found.batches.page(who, limit, cursor)
    with found.sessions() as session:
        shown = summaries(session, page.batches)
    return BatchList(
        data=[BatchView.model_validate(batch_document(summary, base)) for summary in shown],
        next_cursor=page.next_cursor,
        next=str(request.url.include_query_params(cursor=page.next_cursor)) if page.next_cursor else None,
    )


@router.get("/{batch_id}")
async def get_batch(found: ServicesDep, who: CallerDep, batch_id: str, base: BaseUrlDep) -> BatchView:
    """Counts by status, progress, the cost so far and an estimate of the time left."""
    return batch_view(found, _owned(found, who, batch_id), base)


@router.post("/{batch_id}/cancel", openapi_extra=request_body(("application/json", NoBody), required=False))
async def cancel_batch(found: ServicesDep, who: CallerDep, batch_id: str, base: BaseUrlDep) -> BatchView:
    """Cancels every prediction of it that has not ended (running ones at their next step)."""
    _owned(found, who, batch_id)
    return batch_view(found, await found.batches.cancel(who, batch_id), base)


@router.get("/{batch_id}/items")
async def list_batch_items(
    found: ServicesDep,
    who: CallerDep,
    batch_id: str,
    base: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_PAGE)] = 100,
    cursor: Annotated[str | None, Query(description="The `next` of the previous page.")] = None,
) -> BatchItems:
    """The batch's images in order, each with its prediction's status, outputs, error and seed."""
    batch = _owned(found, who, batch_id)
    start = 0
    if cursor:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 10):
            raise InputError("cursor", "is not a cursor this server gave out")
        start = int(cursor)
    with found.sessions() as session:
        items, following = batch_items(session, found.files, batch, start, limit, base)
    return BatchItems(
        items=[BatchItem.model_validate(item.__dict__) for item in items],
        next=None if following is None else str(following),
    )


@router.get("/{batch_id}/results.zip", response_class=StreamingResponse, responses=RESULTS)
async def batch_results(found: ServicesDep, who: CallerDep, batch_id: str) -> StreamingResponse:
    """The outputs so far, named after their inputs (shoe-12.png; shoe-12-1.png... for several images),
    and manifest.csv (name, prediction_id, status, error, seed). Streamed as it is written."""
    batch = _owned(found, who, batch_id)
    return StreamingResponse(
        results_zip(found.sessions, found.files, batch),  # a blocking generator: Starlette runs it in a thread
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{batch.id}-results.zip"'},
    )
