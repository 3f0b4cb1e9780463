"""Filling a batch: which queued predictions may run beside the first one, within the batch's image limit.

Predictions share a batch when their batch key (fluxedit.batching.batch_key: output size, steps,
guidance, acceleration, LoRAs) is equal. Keys take their places one per round, so no key fills a batch
while another key's fitting work waits.
"""

from __future__ import annotations

from collections.abc import Callable

from ..batching import batch_key
from ..schema import EditInput
from ..store.files import FileStore
from ..store.models import Prediction, StoredFile
from ..worker.pool_protocol import WorkerPool

GPU_BATCH_IMAGES = 4  # images one batch holds on a GPU when the operator did not choose (batch_max 0)


def images(batch: list[Prediction]) -> int:
    return sum(EditInput(**prediction.input).num_images for prediction in batch)


def batch_limit(batch_max: int, pool: WorkerPool) -> int:
    """Images one batch may hold: the operator's choice, or by device (a CPU runs each prediction alone)."""
    if batch_max:
        return batch_max
    return GPU_BATCH_IMAGES if any(worker.on_gpu for worker in pool.workers()) else 1


def prediction_batch_key(prediction: Prediction, record_of: Callable[[str], StoredFile | None]) -> tuple:
    """What must match for edits to run as one batch: fluxedit.batching's key, from stored records (`record_of`:
    FileStore.get, or a dict's get over records read at once)."""
    edit_input = EditInput(**prediction.input)
    if len(prediction.input_files) > 1 + len(edit_input.image_urls):
        return (prediction.id,)  # a masked edit runs alone: its mask is its own
    sizes = []
    for file_id in prediction.input_files:
        record = record_of(file_id)
        if record is None:
            return (prediction.id,)  # an input deleted while queued: it runs alone (and fails clearly)
        sizes.append((record.width, record.height))
    key = batch_key(
        edit_input.resolution_mode,
        sizes,
        edit_input.num_inference_steps,
        edit_input.guidance_scale,
        edit_input.acceleration,
        [(lora["digest"], lora["scale"]) for lora in prediction.lora_files or []],
    )
    return (*key, edit_input.output_resolution)  # full-size results are composited per edit: kept apart


def fill_batch(queues: list[list[Prediction]], limit: int, files: FileStore) -> list[Prediction]:
    """queues[0][0] and what can join it: one prediction per key and round, the other keys' first (queues[0]
    already has its place), so no key fills a batch while another's fitting work waits."""
    first = queues[0][0]
    batch, key = [first], prediction_batch_key(first, files.get)
    in_rounds = queues[1:] + queues[:1]
    fitting = [(p for p in queue if p is not first and prediction_batch_key(p, files.get) == key)
               for queue in in_rounds]  # fmt: skip
    while fitting and images(batch) < limit:
        for candidates in list(fitting):
            if images(batch) >= limit:
                break
            candidate = next(candidates, None)
            while candidate is not None and images(batch) + images([candidate]) > limit:
                candidate = next(candidates, None)  # too many images for what is left: a smaller one may fit
            if candidate is None:
                fitting.remove(candidates)
            else:
                batch.append(candidate)
    return batch
