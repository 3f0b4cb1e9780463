"""The worker child: loads the engine once, then runs jobs one at a time.

A reader thread takes control messages (cancel, stop) while the main thread
edits, so a cancel lands within one denoising step. A job names its inputs by
store id; the child reads them through its store reader (a training slice's
pairs and checkpoint too: worker/training_scratch.py).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection

from ..config import EngineConfig
from ..store.files import LocalStoreReader
from .messages import (
    Cancel,
    Cancelled,
    Done,
    EditJob,
    Failed,
    InputFile,
    JobResult,
    LoadFailed,
    LoraFile,
    Progress,
    Ready,
    RunBatch,
    RunJob,
    Started,
    Stop,
    TrainCancelled,
    TrainDone,
    TrainFailed,
    TrainingJob,
    TrainingSummary,
    TrainPaused,
    TrainProgress,
    TrainSlice,
    WorkerInfo,
)
from .training_scratch import TrainingScratch, pack_checkpoint

OUT_OF_MEMORY_EXIT = 3
PARENT_GONE_EXIT = 4
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def child_main(conn: Connection, config: EngineConfig, visible_device: str | None, reader: LocalStoreReader) -> None:
    _die_with_parent()  # first: an orphan must never keep loading, or hold a GPU, after its server is gone
    if visible_device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_device  # before torch initialises CUDA
    try:
        from ..engine import Engine

        engine = Engine.from_config(config)
    except Exception as error:  # any load failure is reported, then the child ends
        conn.send(LoadFailed(_describe(error)))
        return
    placement = engine.model.placement
    try:
        notes = engine.warm_up()  # compiles the `high` level's blocks on a GPU; nothing on a CPU
    except Exception as error:  # a failed warm-up only costs the first `high` request its compile time
        notes = [f"warm-up failed: {type(error).__name__}: {error}"]
    info = WorkerInfo(str(placement.device), placement.memory_mode, engine.attention, tuple(notes or ()))
    conn.send(Ready(info))
    Worker(conn, engine, reader).serve()


def _die_with_parent() -> None:
    """Exit at once when the server that started this worker dies, even by kill -9 and in the middle of a step.

    On Linux the kernel sends SIGKILL when the parent goes (the parent being the thread that started us: the
    pool starts workers from the event loop's thread, which lives as long as the server). Everywhere, a thread
    also waits on multiprocessing's parent sentinel, a pipe that reads as closed once the parent is gone.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return  # not started by multiprocessing (run by hand): nobody to outlive
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the sentinel thread below still notices, within a moment
        if os.getppid() != parent.pid:
            os._exit(PARENT_GONE_EXIT)  # it died before the kernel was asked to tell us
    threading.Thread(target=_exit_when_gone, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_when_gone(parent) -> None:
    parent.join()  # returns only when the parent's end of the sentinel pipe is closed: it has exited
    os._exit(PARENT_GONE_EXIT)  # not sys.exit: the main thread may be deep inside a denoising step


def _describe(error: Exception) -> str:
    from ..schema import FluxeditError

    if isinstance(error, FluxeditError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Worker:
    def __init__(self, conn: Connection, engine, reader: LocalStoreReader):
        self.conn = conn
        self.engine = engine
        self.reader = reader
        self.jobs: queue.Queue = queue.Queue()  # lists of EditJob (one, or a batch), TrainingJob, None: stop
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()
        self.trainers: dict[str, tuple] = {}  # training id -> (its Trainer, its data file), kept between slices
        self.scratch = TrainingScratch(reader)  # the pairs and checkpoints of the slices this worker runs

    def serve(self) -> None:
        threading.Thread(target=self._read_control, daemon=True).start()
        while (work := self.jobs.get()) is not None:
            if isinstance(work, TrainingJob):
                self._train(work)
            else:
                self._run(work)

    def _read_control(self) -> None:
        try:
            while True:
                match self.conn.recv():
                    case RunJob(job):
                        self.jobs.put([job])
                    case RunBatch(jobs):
                        self.jobs.put(list(jobs))
                    case TrainSlice(job):
                        self.jobs.put(job)
                    case Cancel(job_id):
                        with self.lock:
                            self.cancelled.add(job_id)
                    case Stop():
                        break
        except (EOFError, OSError):
            pass  # the parent is gone: stop after the current job
        self.jobs.put(None)

    def _run(self, jobs: list[EditJob]) -> None:
        """Run jobs (one, or a batch of the same size and settings) and report each one's end."""
        from ..batching import runs_alone
        from ..schema import EditCancelled, FluxeditError, InputError

        if len(jobs) > 1 and any(runs_alone(_output_resolution(job), job.mask is not None) for job in jobs):
            for job in jobs:  # a masked or full-size edit never shares a batch: each runs on its own
                self._run([job])
            return
        for job in jobs:
            self.conn.send(Started(job.id))
        requests, runnable = self._requests(jobs)
        ended: set[str] = set()

        def should_drop(index: int) -> bool:
            """A cancelled member of a batch leaves it at the next step and ends now; the others go on."""
            job_id = runnable[index].id
            if job_id not in self.cancelled:
                return False
            ended.add(job_id)
            self.conn.send(Cancelled(job_id))
            return True

        def on_progress(index: int, update) -> None:
            job_id = runnable[index].id
            if job_id not in ended:
                self.conn.send(Progress(job_id, update.step, update.total, _jpeg(update.preview)))

        try:
            if runnable:
                results = self.engine.edit_many(requests, progress=on_progress, previews=True, should_drop=should_drop)
                for job, result in zip(runnable, results, strict=True):
                    if job.id in ended:
                        continue
                    if job.id in self.cancelled:  # cancelled after its last step: the user asked, so it is
                        self.conn.send(Cancelled(job.id))
                    else:
                        self.conn.send(Done(job.id, _result(result)))
        except EditCancelled:
            for job in runnable:
                if job.id not in ended:
                    self.conn.send(Cancelled(job.id))
        except InputError as error:  # e.g. a LoRA that does not fit the model
            self._fail_all(runnable, ended, "INPUT_VALIDATION_ERROR", str(error))
        except FluxeditError as error:
            self._fail_all(runnable, ended, "EXECUTION_ERROR", str(error))
        except Exception as error:
            if type(error).__name__ == "OutOfMemoryError":
                self._fail_all(runnable, ended, "OUT_OF_MEMORY", "the GPU ran out of memory during this edit")
                os._exit(OUT_OF_MEMORY_EXIT)  # a fresh process is the only sure way to get the memory back
            traceback.print_exc()
            self._fail_all(runnable, ended, "EXECUTION_ERROR", f"{type(error).__name__}: {error}")
        finally:
            with self.lock:
                self.cancelled.difference_update(job.id for job in jobs)

    def _train(self, job: TrainingJob) -> None:
        """Run one slice of a training. The trainer stays in memory between its slices on this worker; a slice
        that finds none (the training ran elsewhere, or this worker restarted) fetches the pairs and the
        checkpoint the job names through the reader, into this worker's scratch folder. A paused slice hands its
        checkpoint back, a finished one its LoRA: the service stores them."""
        from ..schema import EditCancelled

        training_id = job.id
        for other in [t for t in self.trainers if t != training_id]:
            self._end_training(other)  # one training's adapter on the model at a time; the rest is in the store
        if training_id in self.trainers and self.trainers[training_id][0].step != job.step:
            self._end_training(training_id)  # another worker trained it meanwhile: resume from its checkpoint
        try:
            trainer = self._trainer(job)
            trainer.activate()
            result = trainer.run(
                progress=lambda p: self.conn.send(TrainProgress(training_id, p.step, p.total, p.loss)),
                should_stop=lambda: training_id in self.cancelled,
                stop_after=job.stop_after,
                output=trainer.out_dir / "lora.safetensors",
            )
            summary = TrainingSummary(result.steps, list(result.losses), checkpoint=_checkpoint_at(trainer))
            if result.steps >= trainer.config.steps:
                lora, comfyui = result.lora_path.read_bytes(), result.comfyui_path.read_bytes()
                self._end_training(training_id)
                self.conn.send(TrainDone(training_id, replace(summary, lora=lora, lora_comfyui=comfyui)))
            else:
                self.conn.send(TrainPaused(training_id, summary))
        except EditCancelled:
            self._end_training(training_id)
            self.conn.send(TrainCancelled(training_id))
        except Exception as error:
            traceback.print_exc()
            self._end_training(training_id)
            self.conn.send(TrainFailed(training_id, f"{type(error).__name__}: {error}"))
        finally:
            self.engine.loras.forget_active()  # the next prediction sets its own adapters again
            with self.lock:
                self.cancelled.discard(training_id)

    def _trainer(self, job: TrainingJob):
        """The training's trainer: the one in memory, or a new one on the pairs and checkpoint the job names."""
        from ..training.dataset import load_pairs
        from ..training.trainer import TrainConfig, Trainer

        if job.id in self.trainers:
            return self.trainers[job.id][0]
        self.trainers[job.id] = (None, job.data)  # its scratch is removed even if the fetch fails half-way
        pairs = load_pairs(self.scratch.pairs(job.data), job.default_caption, job.trigger_word)
        work = self.scratch.work(job.id, job.checkpoint)
        trainer = Trainer(self.engine.pipe, self.engine.device, pairs, TrainConfig(**job.config), work)
        trainer.prepare()
        self.trainers[job.id] = (trainer, job.data)
        return trainer

    def _end_training(self, training_id: str) -> None:
        trainer, data = self.trainers.pop(training_id, (None, None))
        if trainer is not None:
            trainer.remove()
        self.scratch.forget(training_id, data)

    def _requests(self, jobs: list[EditJob]) -> tuple[list, list[EditJob]]:
        """Read and decode each job's images; a job whose images are unusable fails alone."""
        from ..engine import EditRequest
        from ..engine.loras import LoraSpec
        from ..imaging.decode import decode_image
        from ..schema import EditSettings, InputError

        requests, runnable = [], []
        for job in jobs:
            full_size = _output_resolution(job) == "input"  # the main image and its mask keep every pixel
            try:
                images = [
                    decode_image(self._read(image), field=image.field, full_size=full_size and index == 0)
                    for index, image in enumerate(job.images)
                ]
                mask = None
                if job.mask is not None:
                    mask = decode_image(self._read(job.mask), field=job.mask.field, full_size=full_size, as_mask=True)
            except (InputError, OSError) as error:
                self.conn.send(Failed(job.id, "INPUT_VALIDATION_ERROR", str(error)))
                continue
            loras = [
                LoraSpec(path=self._lora_path(lora), scale=lora.scale, field=lora.field, digest=lora.digest)
                for lora in job.loras
            ]
            settings = EditSettings(**job.settings)
            requests.append(EditRequest(settings, images, safety_check=job.safety_check, loras=loras, mask=mask))
            runnable.append(job)
        return requests, runnable

    def _read(self, image: InputFile) -> bytes:
        return self.reader.read_file(image.id, size=image.size, sha256=image.sha256)

    def _lora_path(self, lora: LoraFile) -> str:
        """A LoRA from the store, by its digest; one from the operator's LoRA folder is only on this machine."""
        return lora.server_path or str(self.reader.lora_path(lora.digest))

    def _fail_all(self, jobs: list[EditJob], ended: set[str], code: str, message: str) -> None:
        for job in jobs:
            if job.id not in ended:
                self.conn.send(Failed(job.id, code, message))


def _checkpoint_at(trainer) -> bytes:
    """The checkpoint of the trainer's step, packed: written now unless the slice's last step wrote it."""
    folder = trainer.latest_checkpoint()
    if folder is None or folder.name != f"step-{trainer.step:06d}":
        folder = trainer.save_checkpoint()
    return pack_checkpoint(folder)


def _output_resolution(job: EditJob) -> str:
    return job.settings.get("output_resolution", "model")


def _jpeg(preview) -> bytes | None:
    if preview is None:
        return None
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def _result(result) -> JobResult:
    return JobResult(
        images=tuple(result.images),
        format=result.format.value,
        width=result.width,
        height=result.height,
        seed=result.seed,
        has_nsfw_concepts=result.has_nsfw_concepts,
        timings=dict(result.timings),
        logs=tuple(result.logs),
        transformer_passes=result.transformer_passes,
        acceleration=result.acceleration,
        generated_width=result.generated_width,
        generated_height=result.generated_height,
        crop=result.crop,
    )
