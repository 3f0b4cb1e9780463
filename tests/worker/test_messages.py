"""Worker messages cross a process pipe by pickling: each survives the trip whole and stays frozen."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle

import pytest

from fluxedit.store.files import LocalStoreReader, StoredBytesMismatch
from fluxedit.worker.messages import Died, Done, EditJob, InputFile, JobResult, LoraFile, RunBatch


def test_a_batch_and_a_result_survive_pickling_and_cannot_be_changed():
    job = EditJob("p1", {"prompt": "x"}, (InputFile("file_a", "input.image_url", 3, "abc", "image/png"),), True,
                  (LoraFile("d" * 64, 0.8, "input.loras.0.path"),))  # fmt: skip
    result = JobResult((b"png",), "png", 8, 8, 1, None, {"inference": 0.1}, ("log",), 2, "none")
    for message in (RunBatch((job, job)), Done("p1", result), Died(-9, ("p1",))):
        assert pickle.loads(pickle.dumps(message)) == message
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.id = "p2"


def test_the_store_reader_reads_by_id_and_refuses_bytes_that_do_not_match_their_record(tmp_path):
    reader = LocalStoreReader(tmp_path / "files", tmp_path / "loras")
    path = tmp_path / "files" / "yz" / "file_xyz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"image bytes")
    digest = hashlib.sha256(b"image bytes").hexdigest()
    assert reader.read_file("file_xyz", size=11, sha256=digest) == b"image bytes"
    with pytest.raises(StoredBytesMismatch, match="file_xyz"):
        reader.read_file("file_xyz", size=11, sha256="0" * 64)
    with pytest.raises(FileNotFoundError):
        reader.read_file("file_gone")
    assert reader.lora_path("ab" * 32) == tmp_path / "loras" / f"{'ab' * 32}.safetensors"
