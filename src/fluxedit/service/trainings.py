"""LoRA trainings as jobs of the service: created, handed out in slices, ended, their LoRA registered.

A training runs on the same workers as predictions, in slices of a few steps:
the dispatcher hands out a slice only when no prediction is waiting, so a
prediction waits at most one slice (`training_slice_steps`). Each slice ends
with a checkpoint, so a worker crash or a restart loses at most one slice. Its
pairs and checkpoints are files of the file store (service/training_files.py):
the worker that ran a slice hands its checkpoint back, the next slice's worker,
on any machine, reads it through its store reader. The finished LoRA is stored
and registered under the training's name for its key. Its status changes only
through its Lifecycle (service/lifecycle.py), as a prediction's do.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import ACTIVE_STATUSES, InputError, Status
from ..store.files import FileStore
from ..store.models import Training, utcnow
from ..training_options import TrainingInput
from ..worker.messages import (
    TrainCancelled,
    TrainDone,
    TrainFailed,
    TrainingEvent,
    TrainingJob,
    TrainingSummary,
    TrainPaused,
    TrainProgress,
)
from ..worker.pool_protocol import WorkerPool
from .events import EventHub
from .jobs import training_job
from .keys import Caller
from .lifecycle import Lifecycle, stamped
from .loras import NAME, LoraStore
from .quota import QuotaExceeded
from .status_effects import subscribe_training_effects
from .training_data import unpack
from .training_files import TrainingFiles, files_beside_loras, in_store

log = logging.getLogger(__name__)
MAX_CRASHES = 3  # a training that kills its worker this often is failed, not retried for ever


class TrainingRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        folder: Path,
        loras: LoraStore,
        hub: EventHub,
        slice_steps: int,
        keep_checkpoints: int = 2,
        quota=None,
        files: FileStore | None = None,
    ):
        """`folder`: where uploads are checked (then removed); `files`: the file store that keeps the training's
        data, checkpoints and LoRA (default: the one beside the LoRA store, in its folder or bucket)."""
        self.sessions = sessions
        self.folder = folder
        self.store = TrainingFiles(files or files_beside_loras(loras, quota))
        self.loras = loras
        self.hub = hub
        self.slice_steps = slice_steps
        self.keep_checkpoints = keep_checkpoints
        self.quota = quota  # StorageQuota: a training's pairs are checked against it before they are unpacked
        self.lifecycle = Lifecycle(sessions, Training)
        subscribe_training_effects(self.lifecycle, hub)
        self.pool: WorkerPool | None = None
        self.wake = None  # the prediction runner's dispatcher wake-up
        self._finishing: set[str] = set()  # a slice's files being stored: not to be handed out meanwhile
        self._tasks: set[asyncio.Task] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def attach(self, pool: WorkerPool, wake) -> None:
        self.pool, self.wake = pool, wake

    def recover(self) -> None:
        """A training that was running when the server stopped resumes from its last checkpoint."""
        with self.sessions() as session:
            active = list(session.scalars(select(Training).where(Training.status.in_(ACTIVE_STATUSES))))
        for training in active:
            try:
                if not in_store(training.data_dir):  # of an older version: its files were in local folders
                    self.store.adopt_local(training)
            except OSError as error:
                self.lifecycle.fail(training.id, "TRAINING_ERROR", f"its data could not be stored: {error}")
                continue
            if training.status == Status.processing:
                self.lifecycle.change(
                    training.id, Status.created, log_line="re-queued: the server stopped while it trained"
                )

    # ---- creation ---------------------------------------------------------------------

    async def create(self, caller: Caller, training_input: TrainingInput, zip_path: Path) -> Training:
        training_id = "training_" + secrets.token_hex(8)
        name = training_input.name or training_id.replace("_", "-")
        if not NAME.match(name):
            raise InputError("input.name", "must be 1-100 letters, digits, '.', '_' or '-'")
        self._check_name_free(caller, name)
        # Extracting and decoding every image takes seconds: off the event loop. The pairs are unpacked only to
        # be checked; the zip itself goes into the file store, where workers read it.
        folder = self.folder / training_id
        try:
            _, count = await asyncio.to_thread(unpack, folder, zip_path, training_input, caller, self.quota)
            self._check_name_free(caller, name)  # again: another create may have taken it meanwhile
            data = await asyncio.to_thread(self.store.store_data, training_id, caller.key_id, zip_path)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        training = Training(
            id=training_id,
            owner_key_id=caller.key_id,
            status=Status.created,
            input=training_input.model_dump(mode="json"),
            data_dir=data.id,
            work_dir="",
            step=0,
            losses=[],
            crashes=0,
            lora_name=name,
            logs=stamped(f"{count} pairs"),
        )
        try:
            self.lifecycle.create(training)
        except BaseException:
            await asyncio.to_thread(self.store.files.delete, data.id)
            raise
        self.wake.set()
        return training

    def _check_name_free(self, caller: Caller, name: str) -> None:
        if self.loras.find(caller, name) is not None or self._pending_name(caller, name):
            raise InputError("input.name", f"a LoRA named {name!r} exists already (or a training will make one)")

    def _pending_name(self, caller: Caller, name: str) -> bool:
        with self.sessions() as session:
            query = select(Training.id).where(
                Training.owner_key_id == caller.key_id, Training.lora_name == name, Training.status.in_(ACTIVE_STATUSES)
            )
            return session.scalars(query).first() is not None

    def get(self, training_id: str) -> Training | None:
        with self.sessions() as session:
            return session.get(Training, training_id)

    def list(self, caller: Caller, limit: int = 50) -> list[Training]:
        with self.sessions() as session:
            query = (
                select(Training)
                .where(Training.owner_key_id == caller.key_id)
                .order_by(Training.created_at.desc())
                .limit(limit)
            )
            return list(session.scalars(query))

    def cancel(self, training_id: str) -> None:
        training = self.get(training_id)
        if training is None or training.status.ended:
            return
        if training_id in self.pool.busy_job_ids():
            self.pool.cancel(training_id)  # the worker ends the slice at the next step
        self.lifecycle.change(training_id, Status.cancelled, completed_at=utcnow(), log_line="cancelled")

    # ---- dispatching (asked by the prediction dispatcher when no prediction waits) --------

    def next_slice(self) -> TrainingJob | None:
        busy = set(self.pool.busy_job_ids())
        with self.sessions() as session:
            training = session.scalars(
                select(Training)
                .where(Training.status.in_([Status.created, Status.processing]))
                .order_by(Training.created_at)
            ).first()
        if training is None or training.id in busy or training.id in self._finishing:
            return None
        if training.status == Status.created:
            self.lifecycle.change(
                training.id, Status.processing, started_at=training.started_at or utcnow(), log_line="training"
            )
        return training_job(training, self.slice_steps, self.keep_checkpoints, self.store.files)

    # ---- worker events ---------------------------------------------------------------------

    def on_worker_event(self, event: TrainingEvent) -> None:
        match event:
            case TrainProgress(training_id, step, total, loss):
                self.hub.publish(training_id, {"type": "progress", "step": step, "total": total, "loss": loss})
            case TrainPaused(training_id, summary):
                self._in_background(training_id, self._pause(training_id, summary))
            case TrainDone(training_id, summary):
                self._in_background(training_id, self._finish(training_id, summary))
            case TrainCancelled(training_id):  # by a drain (a user's cancel has already ended it)
                self.lifecycle.change(training_id, Status.created, log_line="paused: the server is stopping")
            case TrainFailed(training_id, message):
                self.lifecycle.fail(training_id, "TRAINING_ERROR", message)
        self.wake.set()

    def on_worker_lost(self, training_id: str) -> None:
        training = self.get(training_id)
        if training is None:
            return
        if training.crashes + 1 >= MAX_CRASHES:
            self.lifecycle.fail(
                training_id,
                "WORKER_LOST",
                f"the worker stopped {MAX_CRASHES} times while training; not tried again",
                crashes=training.crashes + 1,
                log_line="the worker stopped again; giving up",
            )
            return
        self.lifecycle.change(
            training_id,
            Status.created,
            crashes=training.crashes + 1,
            log_line="the worker stopped; resuming from the last checkpoint",
        )

    def storing(self) -> set[asyncio.Task]:
        """The tasks recording a slice's checkpoint now: a stop lets them end (Runner.stop)."""
        return set(self._tasks)

    def _in_background(self, training_id: str, work) -> None:
        """Storing a slice's files takes a while (S3, a LoRA of megabytes): off the loop, and the training is not
        handed out again until its newest checkpoint is recorded."""
        self._finishing.add(training_id)
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, training_id: str, result: TrainingSummary) -> None:
        try:
            await asyncio.to_thread(self._record, training_id, result)
        except Exception as error:  # without its checkpoint the training cannot go on
            log.exception("storing the checkpoint of %s failed", training_id)
            code = error.error_code if isinstance(error, QuotaExceeded) else "TRAINING_ERROR"
            self.lifecycle.fail(training_id, code, f"its checkpoint could not be stored: {error}")
        finally:
            self._finishing.discard(training_id)
            self.wake.set()

    def _record(self, training_id: str, result: TrainingSummary) -> None:
        """The slice's progress, with its checkpoint stored and named in the same row update (runs in a thread)."""
        training = self.get(training_id)
        if training is None or training.status != Status.processing:
            return
        stored = self.store.store_checkpoint(training, result.step, result.checkpoint) if result.checkpoint else None
        with self.sessions.begin() as session:
            row = session.get(Training, training_id, with_for_update=True)
            current = row is not None and row.status == Status.processing
            if current:
                row.step, row.losses = result.step, result.losses
                if stored is not None:
                    row.work_dir = stored.id
        if stored is not None and not current:
            self.store.files.delete(stored.id)  # ended meanwhile (a cancel): nothing resumes from it
        elif stored is not None:
            training.work_dir = stored.id
            self.store.keep_newest_checkpoints(training, self.keep_checkpoints)

    async def _finish(self, training_id: str, result: TrainingSummary) -> None:
        try:
            await self._register(training_id, result)
        except Exception as error:  # the training still ends, with the reason
            log.exception("registering the LoRA of %s failed", training_id)
            self.lifecycle.fail(
                training_id, "TRAINING_ERROR", f"registering the LoRA failed: {error}", log_line=str(error)
            )
        finally:
            self._finishing.discard(training_id)
            self.wake.set()

    async def _register(self, training_id: str, result: TrainingSummary) -> None:
        await asyncio.to_thread(self._record, training_id, result)
        training = self.get(training_id)
        if training is None or training.status != Status.processing:
            return
        sha256, size = await asyncio.to_thread(self._store_lora, training, result)
        self.loras.register(Caller(training.owner_key_id, ""), training.lora_name, sha256, size)
        self.lifecycle.change(
            training_id,
            Status.success,
            completed_at=utcnow(),
            log_line=f"done: {result.step} steps; registered as LoRA {training.lora_name!r}",
        )

    def _store_lora(self, training: Training, result: TrainingSummary) -> tuple[str, int]:
        """The LoRA into the LoRA store (what predictions load), both layouts into the file store (what the
        download serves); (sha256, size) of the first (runs in a thread)."""
        staged, sink = self.loras.temporary()
        try:
            with sink:
                sink.write(result.lora)
            sha256, size = self.loras.add(staged, "lora", True, training.owner_key_id)
        finally:
            staged.unlink(missing_ok=True)  # moved into the LoRA store, unless that failed
        self.store.store_lora(training, "lora.safetensors", result.lora)
        self.store.store_lora(training, "lora-comfyui.safetensors", result.lora_comfyui)
        return sha256, size
