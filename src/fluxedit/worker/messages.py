"""Every message that crosses the worker boundary, one frozen dataclass per kind.

They cross the child's pipe by pickling (a Ray pool sends the same objects to its actors), so they hold
only plain values: strings, numbers, bytes, tuples, dicts of those. Both sides match them by class
(`match message: case Done(job_id, result): ...`), never by position in a tuple.

Parent -> worker:  RunJob | RunBatch | TrainSlice | Cancel | Stop
Worker -> parent:  Ready | LoadFailed
                   Started | Progress | Done | Failed | Cancelled                  (an edit)
                   TrainProgress | TrainPaused | TrainDone | TrainFailed | TrainCancelled  (a training slice)
Made by the pool:  Died, when a worker stops without being asked (its running jobs are lost).

A job names its inputs by file-store id (InputFile) and its LoRAs by content digest (LoraFile): the
worker asks its stores for the bytes, so it need not share a disk with the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class WorkerState(StrEnum):
    """Where a worker is in its life, as the pool, the runner, /health and the metrics see it."""

    starting = "starting"  # loading the model (or waiting to restart after a crash)
    ready = "ready"  # idle: can take a job
    busy = "busy"  # running a job, a batch or a training slice
    stopping = "stopping"  # exiting on its own (after running out of GPU memory): takes no work until back
    failed = "failed"  # could not load the model: never takes work
    stopped = "stopped"  # the pool was closed


# ---- what a job carries -------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One input image, named by its file-store id; size and sha256 let the worker check what it read."""

    id: str
    field: str  # the input name, for error messages ("input.image_url")
    size: int | None = None  # None: its record is gone (the read then fails, naming the file)
    sha256: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class LoraFile:
    """One LoRA adapter, named by its content digest in the LoRA store. `server_path` is set only for a file
    from an operator's LoRA folder (--lora-dir), which is not in the store: only a worker on this machine
    can read it."""

    digest: str
    scale: float
    field: str
    server_path: str | None = None


@dataclass(frozen=True)
class EditJob:
    id: str
    settings: dict  # EditSettings fields, as JSON values
    images: tuple[InputFile, ...]  # main image first
    safety_check: bool
    loras: tuple[LoraFile, ...] = ()
    mask: InputFile | None = None  # where the edit may change the main image; None: everywhere


@dataclass(frozen=True)
class JobResult:
    images: tuple[bytes, ...]
    format: str
    width: int
    height: int
    seed: int
    has_nsfw_concepts: list[bool] | None
    timings: dict[str, float]
    logs: tuple[str, ...]
    transformer_passes: int
    acceleration: str
    generated_width: int = 0  # the size the model generated, which pricing counts: width x height unless the
    generated_height: int = 0  # result is at the input's own size (output_resolution input); 0: width/height
    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) of the main image the model edited

    @property
    def generated_size(self) -> tuple[int, int]:
        return (self.generated_width or self.width, self.generated_height or self.height)


@dataclass(frozen=True)
class TrainingJob:
    """One slice of a training: run from `step` (its last checkpoint) up to `stop_after`. Its pairs (one zip)
    and its checkpoint are files of the file store, read through the worker's reader like an edit's images,
    so the slice runs on any worker, wherever the previous one ran."""

    id: str
    step: int
    data: InputFile  # the zip of the training's pairs
    checkpoint: InputFile | None  # a zip of the checkpoint of `step`; None: the training starts at step 0
    default_caption: str | None
    trigger_word: str | None
    config: dict  # TrainConfig fields
    stop_after: int


@dataclass(frozen=True)
class TrainingSummary:
    """Where a slice ended. Its files come back as bytes (as an edit's outputs do), and the service stores them:
    a paused slice's checkpoint (a zip of its folder, at `step`), a finished training's LoRA in both layouts."""

    step: int
    losses: list[float]
    checkpoint: bytes | None = None
    lora: bytes | None = None  # diffusers layout
    lora_comfyui: bytes | None = None  # ComfyUI's (BFL) layout


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports once its model is loaded."""

    device: str
    memory_mode: str
    attention: str
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        shown = {"device": self.device, "memory_mode": self.memory_mode, "attention": self.attention}
        return shown | ({"notes": list(self.notes)} if self.notes else {})


# ---- parent -> worker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunJob:
    job: EditJob


@dataclass(frozen=True)
class RunBatch:
    """Several jobs of one batch key (fluxedit.batching), run as one batch."""

    jobs: tuple[EditJob, ...]


@dataclass(frozen=True)
class TrainSlice:
    job: TrainingJob


@dataclass(frozen=True)
class Cancel:
    job_id: str


@dataclass(frozen=True)
class Stop:
    pass


ToWorker = RunJob | RunBatch | TrainSlice | Cancel | Stop


# ---- worker -> parent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    info: WorkerInfo


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class Started:
    job_id: str


@dataclass(frozen=True)
class Progress:
    job_id: str
    step: int
    total: int
    preview: bytes | None = None  # a JPEG of the latent, when the worker makes previews


@dataclass(frozen=True)
class Done:
    job_id: str
    result: JobResult


@dataclass(frozen=True)
class Failed:
    job_id: str
    code: str  # the API's error_code: INPUT_VALIDATION_ERROR, EXECUTION_ERROR, OUT_OF_MEMORY
    message: str


@dataclass(frozen=True)
class Cancelled:
    job_id: str


@dataclass(frozen=True)
class TrainProgress:
    job_id: str
    step: int
    total: int
    loss: float


@dataclass(frozen=True)
class TrainPaused:
    """The slice ended at its checkpoint; the training goes on in a later slice."""

    job_id: str
    summary: TrainingSummary


@dataclass(frozen=True)
class TrainDone:
    job_id: str
    summary: TrainingSummary


@dataclass(frozen=True)
class TrainFailed:
    job_id: str
    message: str


@dataclass(frozen=True)
class TrainCancelled:
    job_id: str


# ---- made by the pool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Died:
    """The worker stopped unasked (a crash, a kill); the pool restarts it. `job_ids`: what it was running.
    `requeue`: the pool lost the worker with no sign its jobs caused it (a Ray actor or its node went away),
    so each of them runs once more, within the runner's attempts; a local child's crash fails them."""

    exit_code: int | None
    job_ids: tuple[str, ...] = field(default_factory=tuple)
    requeue: bool = False


EditEvent = Started | Progress | Done | Failed | Cancelled
TrainingEvent = TrainProgress | TrainPaused | TrainDone | TrainFailed | TrainCancelled
FromWorker = Ready | LoadFailed | EditEvent | TrainingEvent
WorkerEvent = FromWorker | Died  # what a pool hands to its subscriber

# After these a job no longer occupies its worker (an edit ended, a training slice paused or ended).
JOB_ENDS = (Done, Failed, Cancelled, TrainPaused, TrainDone, TrainFailed, TrainCancelled)
