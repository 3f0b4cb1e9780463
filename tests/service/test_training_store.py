"""Trainings through the file store: a training's pairs, checkpoints and LoRA are files of the store (here a bucket
of a local S3 server), never paths on the API's disk, so any worker can run any slice.

- A real `fluxedit serve --storage s3://bucket/prefix` trains on the tiny model: its zip, its checkpoints and its
  LoRA are in the bucket, the data folder and the workers' scratch hold none of them once it has ended, and the
  LoRA downloads through the API in both layouts.
- A slice resumes from a checkpoint it fetches through the store reader: a second worker with nothing on its
  disk (the first one's scratch wiped) continues a training exactly where the first stopped, ending with the
  weights of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load
from sqlalchemy import select

from fluxedit.store.database import open_database
from fluxedit.store.models import StoredFile
from fluxedit.worker.child import Worker
from fluxedit.worker.messages import InputFile, TrainDone, TrainingJob, TrainPaused, TrainProgress
from fluxedit.worker.training_scratch import TrainingScratch
from tests.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures)
from tests.service.server import Server
from tests.service.test_trainings_api import FIELDS, pairs_zip, wait_training

PREFIX = "team/trained"


def stored_records(data: Path) -> list[StoredFile]:
    sessions = open_database(f"sqlite:///{data / 'fluxedit.db'}")
    try:
        with sessions() as session:
            return list(session.scalars(select(StoredFile)))
    finally:
        sessions.kw["bind"].dispose()


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def test_a_training_with_files_in_s3_keeps_its_data_checkpoints_and_lora_in_the_bucket(tmp_path, s3_bucket):  # noqa: F811
    data, scratch = tmp_path / "data", tmp_path / "tmp"
    scratch.mkdir()
    env = {"FLUXEDIT_TRAINING_SLICE_STEPS": "2", "TMPDIR": str(scratch)}  # the workers' scratch: in tmp/
    pairs = pairs_zip()
    with Server(data, "--storage", f"s3://{s3_bucket.name}/{PREFIX}", env=env) as server, server.client() as client:
        fields = {**FIELDS, "name": "bucketed", "steps": "6", "rank": "4"}
        created = client.post("/v1/trainings", files={"data": ("pairs.zip", pairs)}, data=fields)
        assert created.status_code == 201, created.text
        done = wait_training(client, created.json()["id"])
        assert done["status"] == "success", done["logs"]
        assert done["progress"]["step"] == 6 and len(done["losses"]) == 6
        downloads = {layout: client.get(url) for layout, url in done["lora"]["urls"].items()}
    assert "Traceback" not in server.log()

    in_bucket = s3_bucket.objects(f"{PREFIX}/")
    by_purpose: dict[str, list[StoredFile]] = {}
    for record in stored_records(data):
        by_purpose.setdefault(record.purpose, []).append(record)
        assert in_bucket[f"{PREFIX}/files/{record.id[-2:]}/{record.id}"] == record.size  # every file: in the bucket

    (zipped,) = by_purpose["training-data"]  # the zip it was given, as it was given
    assert zipped.sha256 == hashlib.sha256(pairs).hexdigest() and zipped.size == len(pairs)
    steps = sorted(record.filename.rsplit("/", 1)[1] for record in by_purpose["checkpoint"])
    assert steps == ["step-000004.zip", "step-000006.zip"]  # each slice's end, the newest two kept (the default)

    for layout, prefix in (("diffusers", "transformer."), ("comfyui", "diffusion_model.")):
        assert downloads[layout].status_code == 200, downloads[layout].text
        assert all(key.startswith(prefix) for key in load(downloads[layout].content))
    trained = {record.filename.rsplit("/", 1)[1]: record for record in by_purpose["trained-lora"]}
    assert trained["lora.safetensors"].sha256 == hashlib.sha256(downloads["diffusers"].content).hexdigest()
    assert trained["lora-comfyui.safetensors"].sha256 == hashlib.sha256(downloads["comfyui"].content).hexdigest()
    digest = trained["lora.safetensors"].sha256  # and in the LoRA store, where predictions load it from
    assert in_bucket[f"{PREFIX}/loras/{digest}.safetensors"] == len(downloads["diffusers"].content)

    assert files_under(data / "files") == [] and files_under(data / "loras") == []
    assert files_under(data / "trainings") == []  # no pairs, no zip, no checkpoints on the API's disk
    assert not list(data.rglob("step-*"))
    assert files_under(scratch / f"fluxedit-trainings-{os.getuid()}") == []  # the worker's scratch went too


class Pipe:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


class CountingReader:
    """A store reader over a dict of file ids that checks what it hands out and counts each read."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.reads: list[str] = []

    def add(self, file_id: str, data: bytes, field: str) -> InputFile:
        self.files[file_id] = data
        return InputFile(file_id, field, len(data), hashlib.sha256(data).hexdigest(), "application/zip")

    def read_file(self, file_id: str, *, size=None, sha256=None) -> bytes:
        self.reads.append(file_id)
        data = self.files[file_id]
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256
        return data


CONFIG = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 2, "seed": 3, "resolution": 128, "rank": 4}


def slice_of(data: InputFile, step: int, stop_after: int, checkpoint: InputFile | None = None) -> TrainingJob:
    return TrainingJob("training_t", step, data, checkpoint, "invert the colours", None, CONFIG, stop_after)


def worker(reader, root: Path) -> tuple[Worker, Pipe]:
    from fluxedit.engine import Engine

    pipe = Pipe()
    made = Worker(pipe, Engine.load(model="tiny", device="cpu"), reader)  # each its own model, as on two machines
    made.scratch = TrainingScratch(reader, root)
    return made, pipe


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_slice_on_another_worker_resumes_from_the_checkpoint_it_fetches_through_the_reader(tmp_path):
    reader = CountingReader()
    data = reader.add("file_pairs", pairs_zip(), "data")

    straight, straight_pipe = worker(reader, tmp_path / "straight")
    straight._train(slice_of(data, 0, 6))
    (uninterrupted,) = [m for m in straight_pipe.sent if isinstance(m, TrainDone)]

    first, first_pipe = worker(reader, tmp_path / "first")
    first._train(slice_of(data, 0, 2))
    first._train(slice_of(data, 2, 4))  # the next slice on the same worker: from memory, nothing fetched again
    paused = [m.summary for m in first_pipe.sent if isinstance(m, TrainPaused)]
    assert [summary.step for summary in paused] == [2, 4]
    assert reader.reads.count("file_pairs") == 2  # the straight run's fetch and the first worker's one
    shutil.rmtree(tmp_path / "first")  # that worker's disk is gone; only the store has its checkpoint
    checkpoint = reader.add("file_step4", paused[-1].checkpoint, "checkpoint")

    second, second_pipe = worker(reader, tmp_path / "second")
    reader.reads.clear()
    second._train(slice_of(data, 4, 6, checkpoint))
    assert reader.reads == ["file_pairs", "file_step4"]  # its pairs and its checkpoint, through the reader
    assert [m.step for m in second_pipe.sent if isinstance(m, TrainProgress)] == [5, 6]  # from step 4, not 0
    (done,) = [m for m in second_pipe.sent if isinstance(m, TrainDone)]
    assert done.summary.losses == uninterrupted.summary.losses  # the same noise, order and optimizer state
    resumed, whole = load(done.summary.lora), load(uninterrupted.summary.lora)
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[key], whole[key]) for key in whole)
    assert files_under(tmp_path / "second") == []  # its scratch is removed once the training has ended
