"""The worker reads a job's mask like its images, decodes what output_resolution input needs at full size, runs a
masked or full-size edit alone even when handed a batch, and reports the size the model generated."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from fluxedit.imaging.composite import MAX_OUTPUT_PIXELS
from fluxedit.worker.child import Worker
from fluxedit.worker.messages import Done, EditJob, Failed, InputFile, JobResult, Started
from tests.helpers import encoded, pattern, png_bomb


class Pipe:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


class Reader:
    """A store reader over a dict of file ids."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def read_file(self, file_id: str, size=None, sha256=None) -> bytes:
        return self.files[file_id]


def _file(files: dict[str, bytes], name: str, data: bytes, field: str) -> InputFile:
    files[name] = data
    return InputFile(name, field, len(data), hashlib.sha256(data).hexdigest(), "image/png")


def _mask_png(size, box) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return encoded(mask, "PNG")


def _run(tiny_engine, files, jobs):
    pipe = Pipe()
    Worker(pipe, tiny_engine, Reader(files))._run(jobs)
    return pipe.sent


def _settings(**extra) -> dict:
    return {"prompt": "make it blue", "num_inference_steps": 2, "seed": 5, **extra}


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    return encoded(pattern(1200, 900, seed=2), "PNG")


def test_a_masked_full_size_job_comes_back_at_the_inputs_size_from_a_crop(tiny_engine, photo_png):
    files: dict[str, bytes] = {}
    image = _file(files, "image", photo_png, "input.image_url")
    mask = _file(files, "mask", _mask_png((1200, 900), (1000, 700, 1100, 800)), "input.mask_url")
    job = EditJob("p1", _settings(output_resolution="input"), (image,), False, mask=mask)
    sent = _run(tiny_engine, files, [job])
    assert isinstance(sent[0], Started)
    done = sent[-1]
    assert isinstance(done, Done), sent
    result: JobResult = done.result
    assert (result.width, result.height) == (1200, 900)
    assert result.crop is not None and result.generated_size == (1024, 1024)  # a 512 x 512 crop, at 1024 x 1024
    pixels = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))
    source = np.asarray(Image.open(io.BytesIO(photo_png)).convert("RGB"))
    assert np.array_equal(pixels[:600], source[:600]) and np.array_equal(pixels[:, :900], source[:, :900])


def test_a_batch_holding_a_masked_job_runs_each_job_alone(tiny_engine, photo_png):
    files: dict[str, bytes] = {}
    image = _file(files, "image", photo_png, "input.image_url")
    mask = _file(files, "mask", _mask_png((1200, 900), (0, 0, 600, 450)), "input.mask_url")
    jobs = [EditJob("plain", _settings(), (image,), False), EditJob("masked", _settings(), (image,), False, mask=mask)]
    sent = _run(tiny_engine, files, jobs)
    done = {m.job_id: m.result for m in sent if isinstance(m, Done)}
    assert set(done) == {"plain", "masked"}, sent
    assert done["masked"].generated_size == (done["masked"].width, done["masked"].height) == (1184, 880)
    assert done["masked"].images[0] != done["plain"].images[0]


def test_a_mask_of_another_size_fails_the_job_naming_the_mask(tiny_engine, photo_png):
    files: dict[str, bytes] = {}
    image = _file(files, "image", photo_png, "input.image_url")
    mask = _file(files, "mask", _mask_png((600, 450), (0, 0, 100, 100)), "input.mask_url")
    sent = _run(tiny_engine, files, [EditJob("p", _settings(), (image,), False, mask=mask)])
    failed = sent[-1]
    assert isinstance(failed, Failed) and failed.code == "INPUT_VALIDATION_ERROR"
    assert failed.message.startswith("mask: is 600x450") and "1200x900" in failed.message


def test_a_full_size_result_past_the_limit_fails_naming_output_resolution(tiny_engine):
    files: dict[str, bytes] = {}
    image = _file(files, "image", png_bomb(8000, 5001), "input.image_url")
    sent = _run(tiny_engine, files, [EditJob("p", _settings(output_resolution="input"), (image,), False)])
    failed = sent[-1]
    assert isinstance(failed, Failed) and failed.code == "INPUT_VALIDATION_ERROR"
    assert failed.message.startswith("output_resolution:") and f"{MAX_OUTPUT_PIXELS:,}" in failed.message
