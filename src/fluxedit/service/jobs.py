"""Building the jobs a worker runs, from stored rows: an edit from a prediction, a slice from a training.

A job names its inputs by file-store id (with the size and sha256 the worker checks) and its LoRAs by
digest, so a worker reads them from its own store reader, wherever it runs.
"""

from __future__ import annotations

from ..schema import EditInput
from ..store.files import FileStore
from ..store.models import Prediction, Training
from ..worker.messages import EditJob, InputFile, LoraFile, TrainingJob
from .preparation import MASK_FIELD, image_count, input_fields


def edit_job(prediction: Prediction, files: FileStore) -> EditJob:
    """The job of a prepared prediction: its images, then its mask when one applies (a file after the images:
    always the greyscale form of masks.py, the main image's size; a full mask was dropped before)."""
    edit_input = EditInput(**prediction.input)
    count = image_count(edit_input)
    image_ids, mask_ids = prediction.input_files[:count], prediction.input_files[count:]
    images = [input_file(file_id, field, files) for file_id, field in zip(image_ids, input_fields(count), strict=True)]
    return EditJob(
        id=prediction.id,
        settings=edit_input.settings().model_dump(mode="json"),
        images=tuple(images),
        safety_check=edit_input.enable_safety_checker,
        loras=tuple(lora_file(lora) for lora in prediction.lora_files or []),
        mask=input_file(mask_ids[0], MASK_FIELD, files) if mask_ids else None,
    )


def input_file(file_id: str, field: str, files: FileStore) -> InputFile:
    record = files.get(file_id)
    if record is None:  # deleted meanwhile: the worker's read fails, naming the file
        return InputFile(file_id, field)
    return InputFile(file_id, field, record.size, record.sha256, record.content_type)


def lora_file(resolved: dict) -> LoraFile:
    """A stored LoRA as a job names it. A row without `in_store` (from an older version) keeps its path."""
    server_path = None if resolved.get("in_store") else resolved["path"]
    return LoraFile(resolved["digest"], resolved["scale"], resolved["field"], server_path)


def training_job(training: Training, slice_steps: int, keep_checkpoints: int, files: FileStore) -> TrainingJob:
    """The next slice of a training: from its last checkpoint, `slice_steps` further (or to its end). Its pairs
    and that checkpoint are files of the store (service/training_files.py), named by id like an edit's images."""
    settings = dict(training.input)
    settings.pop("name", None)
    caption, trigger = settings.pop("default_caption"), settings.pop("trigger_word")
    return TrainingJob(
        id=training.id,
        step=training.step,
        data=input_file(training.data_dir, "data", files),
        checkpoint=input_file(training.work_dir, "checkpoint", files) if training.work_dir else None,
        default_caption=caption,
        trigger_word=trigger,
        config={**settings, "checkpoint_every": slice_steps, "keep_checkpoints": keep_checkpoints},
        stop_after=min(training.step + slice_steps, training.input["steps"]),
    )
