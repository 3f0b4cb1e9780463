"""/v1/trainings: train a LoRA from before/after pairs; the result is a LoRA usable by name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...schema import ENDED_STATUSES, InputError, Status
from ...service.fetch import fetch_to_file
from ...service.keys import Caller
from ...service.services import Services
from ...service.training_files import in_store
from ...service.webhook_outbox import iso
from ...store.models import Training
from ...training_options import validated_training_input
from ..bodies import NoBody, json_body, request_body, required_object
from ..deps import BaseUrlDep, CallerDep, ServicesDep, WaitDep
from ..docs import binary_response
from ..errors import SEED_ERRORS, ApiError, not_found
from ..stored_responses import stored_file_response
from ..uploads import MAX_FORM_FIELD_BYTES
from . import protocol
from .protocol import TrainingList, TrainingRequest, TrainingUpload

router = APIRouter(prefix="/v1/trainings", tags=["trainings"], responses=SEED_ERRORS)
MAX_DATA_BYTES = 2 * 1024**3
FORMATS = {"diffusers": "lora.safetensors", "comfyui": "lora-comfyui.safetensors"}
LORA_FILE = binary_response("The LoRA, a .safetensors file", "application/octet-stream")
TRAINING_BODY = request_body(("multipart/form-data", TrainingUpload), ("application/json", TrainingRequest))


def training_view(training: Training, base: str) -> protocol.Training:
    root = f"{base}/v1/trainings/{training.id}"
    lora = None
    if training.status == Status.success:
        lora = protocol.TrainedLora(
            name=training.lora_name,
            usage=protocol.LoraUsage(loras=[protocol.LoraUse(path=training.lora_name, scale=1.0)]),
            urls={name: f"{root}/lora?format={name}" for name in FORMATS},
        )
    total = training.input["steps"]
    last_loss = training.losses[-1] if training.losses else None
    failure = None
    if training.error_code:
        failure = protocol.TrainingFailure(code=training.error_code, message=training.error_message)
    return protocol.Training(
        id=training.id,
        status=training.status,
        input=training.input,
        progress=protocol.TrainingProgress(
            step=training.step, total=total, percent=round(100 * training.step / total, 1)
        ),
        loss=last_loss,
        losses=training.losses,
        lora=lora,
        error=failure,
        logs=training.logs,
        urls=protocol.TrainingUrls(get=root, cancel=f"{root}/cancel"),
        created_at=iso(training.created_at),
        started_at=iso(training.started_at),
        completed_at=iso(training.completed_at),
    )


@router.post("", status_code=201, openapi_extra=TRAINING_BODY)
async def create_training(request: Request, found: ServicesDep, who: CallerDep, base: BaseUrlDep) -> protocol.Training:
    """Multipart: `data` (a .zip of NAME_start/NAME_end images and NAME.txt captions) and the inputs as
    fields; or JSON `{"input": {"data": "https://.../pairs.zip", "steps": ..., ...}}`."""
    folder = found.settings.data_dir / "trainings"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / f"upload-{id(request)}.zip"
    try:
        if request.headers.get("content-type", "").startswith("multipart/"):
            fields = await _multipart(request, zip_path)
        else:
            fields = await _json_with_url(request, zip_path, found)
        training = await found.trainings.create(who, validated_training_input(fields), zip_path)
    finally:
        zip_path.unlink(missing_ok=True)
    return training_view(training, base)


async def _multipart(request: Request, zip_path: Path) -> dict:
    try:  # read here, not by FastAPI: counted while it streams (body_limit.py), the zip written as it comes
        form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_FORM_FIELD_BYTES)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart upload ({error.message})") from None
    upload = form.get("data")
    if not isinstance(upload, UploadFile):
        raise InputError("data", "is required: a .zip of the training pairs")
    with zip_path.open("wb") as sink:
        while chunk := await upload.read(1 << 20):
            await asyncio.to_thread(sink.write, chunk)  # up to 2 GB: off the event loop
    return {key: _form_value(value) for key, value in form.items() if key != "data"}


def _form_value(value: str):
    try:
        return json.loads(value)  # numbers and booleans arrive as text in a form
    except (json.JSONDecodeError, TypeError, RecursionError):
        return value


async def _json_with_url(request: Request, zip_path: Path, found: Services) -> dict:
    body = await json_body(request)
    fields = dict(required_object(body, "input", "an object with at least data (the URL of a .zip of pairs)"))
    url = fields.pop("data", None)
    if not isinstance(url, str):
        raise InputError("input.data", "is required: the URL of a .zip of the training pairs")
    validated_training_input(fields)  # every field checked before the download, not after it
    with zip_path.open("wb") as sink:
        await fetch_to_file(url, found.policy, "input.data", sink)
    return fields


def _owned(found: Services, who: Caller, training_id: str) -> Training:
    training = found.trainings.get(training_id)
    if training is None or training.owner_key_id != who.key_id:
        raise not_found(f"training {training_id}")
    return training


@router.get("/{training_id}")
async def get_training(
    found: ServicesDep, who: CallerDep, seconds: WaitDep, training_id: str, base: BaseUrlDep
) -> protocol.Training:
    """The training; with ?wait=N (or Prefer: wait=N) once it has ended, or after N seconds."""
    training = _owned(found, who, training_id)
    if seconds > 0 and training.status not in ENDED_STATUSES:
        await found.hub.wait_finished(training_id, seconds)
    return training_view(found.trainings.get(training_id), base)


@router.post("/{training_id}/cancel", openapi_extra=request_body(("application/json", NoBody), required=False))
async def cancel_training(found: ServicesDep, who: CallerDep, training_id: str, base: BaseUrlDep) -> protocol.Training:
    _owned(found, who, training_id)
    found.trainings.cancel(training_id)
    return training_view(found.trainings.get(training_id), base)


@router.get("")
async def list_trainings(found: ServicesDep, who: CallerDep, base: BaseUrlDep) -> TrainingList:
    return TrainingList(data=[training_view(t, base) for t in found.trainings.list(who)])


@router.get("/{training_id}/lora", response_class=FileResponse, responses=LORA_FILE)
async def download_lora(
    found: ServicesDep, who: CallerDep, training_id: str, format: Annotated[str, Query()] = "diffusers"
) -> Response:
    """The trained LoRA from the file store: a local file, streamed from S3, or a presigned redirect, as files are."""
    training = _owned(found, who, training_id)
    if format not in FORMATS:
        raise InputError("format", f"must be one of {', '.join(FORMATS)} (got {format!r})")
    name = f"{training.lora_name}{'-comfyui' if format == 'comfyui' else ''}.safetensors"
    record = None
    if training.status == Status.success:
        record = await asyncio.to_thread(found.trainings.store.lora, training, FORMATS[format])
    if record is not None:
        return await stored_file_response(found, record, f"the LoRA of training {training_id}", filename=name)
    local = Path(training.work_dir) / FORMATS[format]  # a training of an older version: in its local folder
    if training.status != Status.success or in_store(training.data_dir) or not local.is_file():
        raise ApiError(409, f"training {training_id} has no LoRA yet (status {training.status})")
    return FileResponse(local, media_type="application/octet-stream", filename=name)
