"""/v1/trainings: train a LoRA from before/after pairs; the result is a LoRA usable by name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...schema import InputError
from ...service.fetch import fetch_to_file
from ...service.keys import Caller
from ...service.trainings import TERMINAL, validated_training_input
from ...store.models import Training
from ..bodies import json_body, required_object
from ..deps import base_url, caller, requested_wait, services
from ..errors import ApiError, not_found
from ..uploads import MAX_FORM_FIELD_BYTES
from .views import iso

router = APIRouter(prefix="/v1/trainings", tags=["trainings"])
MAX_DATA_BYTES = 2 * 1024**3
FORMATS = {"diffusers": "lora.safetensors", "comfyui": "lora-comfyui.safetensors"}


def training_view(training: Training, base: str) -> dict:
    root = f"{base}/v1/trainings/{training.id}"
    lora = None
    if training.status == "success":
        lora = {
            "name": training.lora_name,
            "usage": {"loras": [{"path": training.lora_name, "scale": 1.0}]},
            "urls": {name: f"{root}/lora?format={name}" for name in FORMATS},
        }
    total = training.input["steps"]
    last_loss = training.losses[-1] if training.losses else None
    return {
        "id": training.id,
        "status": training.status,
        "input": training.input,
        "progress": {"step": training.step, "total": total, "percent": round(100 * training.step / total, 1)},
        "loss": last_loss,
        "losses": training.losses,
        "lora": lora,
        "error": {"code": training.error_code, "message": training.error_message} if training.error_code else None,
        "logs": training.logs,
        "urls": {"get": root, "cancel": f"{root}/cancel"},
        "created_at": iso(training.created_at),
        "started_at": iso(training.started_at),
        "completed_at": iso(training.completed_at),
    }


@router.post("", status_code=201)
async def create_training(request: Request, who: Caller = Depends(caller)) -> dict:
    """Multipart: `data` (a .zip of NAME_start/NAME_end images and NAME.txt captions) and the inputs as
    fields; or JSON `{"input": {"data": "https://.../pairs.zip", "steps": ..., ...}}`."""
    found = services(request)
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
    return training_view(training, base_url(request))


async def _multipart(request: Request, zip_path: Path) -> dict:
    try:
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


async def _json_with_url(request: Request, zip_path: Path, found) -> dict:
    body = await json_body(request)
    fields = dict(required_object(body, "input", "an object with at least data (the URL of a .zip of pairs)"))
    url = fields.pop("data", None)
    if not isinstance(url, str):
        raise InputError("input.data", "is required: the URL of a .zip of the training pairs")
    validated_training_input(fields)  # every field checked before the download, not after it
    with zip_path.open("wb") as sink:
        await fetch_to_file(url, found.policy, "input.data", sink)
    return fields


def _owned(request: Request, who: Caller, training_id: str) -> Training:
    training = services(request).trainings.get(training_id)
    if training is None or training.owner_key_id != who.key_id:
        raise not_found(f"training {training_id}")
    return training


@router.get("/{training_id}")
async def get_training(
    request: Request,
    training_id: str,
    wait: str | None = Query(None, description="Seconds to wait for the end: a number from 0 to 60."),
    who: Caller = Depends(caller),
) -> dict:
    seconds = requested_wait(request, wait)
    training = _owned(request, who, training_id)
    if seconds > 0 and training.status not in TERMINAL:
        await services(request).hub.wait_finished(training_id, seconds)
    return training_view(services(request).trainings.get(training_id), base_url(request))


@router.post("/{training_id}/cancel")
async def cancel_training(request: Request, training_id: str, who: Caller = Depends(caller)) -> dict:
    _owned(request, who, training_id)
    services(request).trainings.cancel(training_id)
    return training_view(services(request).trainings.get(training_id), base_url(request))


@router.get("")
async def list_trainings(request: Request, who: Caller = Depends(caller)) -> dict:
    base = base_url(request)
    return {"data": [training_view(t, base) for t in services(request).trainings.list(who)]}


@router.get("/{training_id}/lora")
async def download_lora(
    request: Request, training_id: str, format: str = Query("diffusers"), who: Caller = Depends(caller)
) -> FileResponse:
    training = _owned(request, who, training_id)
    if format not in FORMATS:
        raise InputError("format", f"must be one of {', '.join(FORMATS)} (got {format!r})")
    path = Path(training.work_dir) / FORMATS[format]
    if training.status != "success" or not path.is_file():
        raise ApiError(409, f"training {training_id} has no LoRA yet (status {training.status})")
    name = f"{training.lora_name}{'-comfyui' if format == 'comfyui' else ''}.safetensors"
    return FileResponse(path, media_type="application/octet-stream", filename=name)
