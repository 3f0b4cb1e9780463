"""LoRA trainings as jobs of the service. The TrainingRunner is the only code that changes their status.

A training runs on the same workers as predictions, in slices of a few steps:
the dispatcher hands out a slice only when no prediction is waiting, so a
prediction waits at most one slice (`training_slice_steps`). Each slice ends
with a checkpoint, so a worker crash or a restart loses at most one slice. The
finished LoRA is registered under the training's name for its key.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import InputError
from ..store.models import Training, utcnow
from ..training.dataset import DatasetError, count_pairs, extract_zip
from ..training_options import TrainingInput, validated_training_input  # noqa: F401 (api/seed imports it from here)
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
from .keys import Caller
from .loras import NAME, LoraStore

log = logging.getLogger(__name__)
QUEUED, PROCESSING, SUCCESS, ERROR, CANCELLED = "created", "processing", "success", "error", "cancelled"
TERMINAL = frozenset({SUCCESS, ERROR, CANCELLED})
MAX_CRASHES = 3  # a training that kills its worker this often is failed, not retried for ever


# What a damaged or unusual zip raises while it is read: the sender's problem, told as such (never a 500).
# RuntimeError: an encrypted member; NotImplementedError: an unsupported compression; zlib.error and
# EOFError: damaged data; UnicodeDecodeError: a caption that is not UTF-8 text.
UNREADABLE_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError,
                  UnicodeDecodeError)  # fmt: skip


def _zip_problem(error: Exception) -> str:
    if isinstance(error, zipfile.BadZipFile):
        return f"not a zip file ({error})"
    if isinstance(error, UnicodeDecodeError):
        return "a caption file is not UTF-8 text"
    if isinstance(error, RuntimeError):
        return f"the zip cannot be read: it is encrypted or damaged ({error})"
    if isinstance(error, NotImplementedError):
        return f"the zip uses a compression method this server does not read ({error}); use deflate or store"
    return f"the zip is damaged ({type(error).__name__}: {error})"


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
    ):
        self.sessions = sessions
        self.folder = folder
        self.loras = loras
        self.hub = hub
        self.slice_steps = slice_steps
        self.keep_checkpoints = keep_checkpoints
        self.quota = quota  # StorageQuota: a training's pairs are checked against it before they are unpacked
        self.pool: WorkerPool | None = None
        self.wake = None  # the prediction runner's dispatcher wake-up
        self._finishing: set[str] = set()  # done on the worker, being registered: not to be handed out again
        self._tasks: set[asyncio.Task] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def attach(self, pool: WorkerPool, wake) -> None:
        self.pool, self.wake = pool, wake

    def recover(self) -> None:
        """A training that was running when the server stopped resumes from its last checkpoint."""
        with self.sessions() as session:
            running = [t.id for t in session.scalars(select(Training).where(Training.status == PROCESSING))]
        for training_id in running:
            self._transition(training_id, QUEUED, log_line="re-queued: the server stopped while it trained")

    # ---- creation ---------------------------------------------------------------------

    async def create(self, caller: Caller, training_input: TrainingInput, zip_path: Path) -> Training:
        training_id = "training_" + secrets.token_hex(8)
        name = training_input.name or training_id.replace("_", "-")
        if not NAME.match(name):
            raise InputError("input.name", "must be 1-100 letters, digits, '.', '_' or '-'")
        self._check_name_free(caller, name)
        # Extracting and decoding every image takes seconds: off the event loop.
        data_dir, count = await asyncio.to_thread(self._unpack, training_id, zip_path, training_input, caller)
        try:
            self._check_name_free(caller, name)  # again: another create may have taken it meanwhile
        except InputError:
            await asyncio.to_thread(shutil.rmtree, self.folder / training_id, True)
            raise
        training = Training(
            id=training_id,
            owner_key_id=caller.key_id,
            status=QUEUED,
            input=training_input.model_dump(mode="json"),
            data_dir=str(data_dir),
            work_dir=str(self.folder / training_id / "work"),
            step=0,
            losses=[],
            crashes=0,
            lora_name=name,
            logs=f"{_stamp()} {count} pairs\n",
        )
        with self.sessions.begin() as session:
            session.add(training)
        self.wake.set()
        return training

    def _check_name_free(self, caller: Caller, name: str) -> None:
        if self.loras.find(caller, name) is not None or self._pending_name(caller, name):
            raise InputError("input.name", f"a LoRA named {name!r} exists already (or a training will make one)")

    def _unpack(
        self, training_id: str, zip_path: Path, training_input: TrainingInput, caller: Caller
    ) -> tuple[Path, int]:
        """Extract the pairs and check every one (runs in a thread); (the data folder, the number of pairs)."""
        unpacked = self.folder / training_id / "data"
        unpacked.mkdir(parents=True)
        try:
            if self.quota is not None:
                with zipfile.ZipFile(zip_path) as archive:
                    self.quota.check(caller.key_id, sum(info.file_size for info in archive.infolist()))
            data_dir = extract_zip(zip_path, unpacked)
            pairs = count_pairs(data_dir, training_input.default_caption, training_input.trigger_word)
        except (DatasetError, *UNREADABLE_ZIP) as error:
            shutil.rmtree(self.folder / training_id, ignore_errors=True)
            problems = error.problems if isinstance(error, DatasetError) else [f"data: {_zip_problem(error)}"]
            raise InputError("data", "; ".join(problems)) from None
        except BaseException:
            shutil.rmtree(self.folder / training_id, ignore_errors=True)
            raise
        finally:
            if self.quota is not None:
                self.quota.forget_training_sizes()
        return data_dir, pairs

    def _pending_name(self, caller: Caller, name: str) -> bool:
        with self.sessions() as session:
            query = select(Training.id).where(
                Training.owner_key_id == caller.key_id, Training.lora_name == name, Training.status.not_in(TERMINAL)
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
        if training is None or training.status in TERMINAL:
            return
        if training_id in self.pool.busy_job_ids():
            self.pool.cancel(training_id)  # the worker ends the slice at the next step
        self._transition(training_id, CANCELLED, completed_at=utcnow(), log_line="cancelled")

    # ---- dispatching (asked by the prediction runner when no prediction waits) ------------

    def next_slice(self) -> TrainingJob | None:
        busy = set(self.pool.busy_job_ids())
        with self.sessions() as session:
            training = session.scalars(
                select(Training).where(Training.status.in_([QUEUED, PROCESSING])).order_by(Training.created_at)
            ).first()
        if training is None or training.id in busy or training.id in self._finishing:
            return None
        if training.status == QUEUED:
            self._transition(training.id, PROCESSING, started_at=training.started_at or utcnow(), log_line="training")
        settings = dict(training.input)
        settings.pop("name", None)
        caption, trigger = settings.pop("default_caption"), settings.pop("trigger_word")
        return TrainingJob(
            id=training.id,
            step=training.step,
            data_dir=training.data_dir,
            work_dir=training.work_dir,
            default_caption=caption,
            trigger_word=trigger,
            config={**settings, "checkpoint_every": self.slice_steps, "keep_checkpoints": self.keep_checkpoints},
            stop_after=min(training.step + self.slice_steps, training.input["steps"]),
        )

    # ---- worker events ---------------------------------------------------------------------

    def on_worker_event(self, event: TrainingEvent) -> None:
        match event:
            case TrainProgress(training_id, step, total, loss):
                self.hub.publish(training_id, {"type": "progress", "step": step, "total": total, "loss": loss})
            case TrainPaused(training_id, summary):
                self._record(training_id, summary)
            case TrainDone(training_id, summary):
                self._finishing.add(training_id)
                task = asyncio.get_running_loop().create_task(self._finish(training_id, summary))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case TrainCancelled(training_id):  # by a drain (a user's cancel has already ended it)
                self._transition(training_id, QUEUED, log_line="paused: the server is stopping")
            case TrainFailed(training_id, message):
                self._transition(training_id, ERROR, error_code="TRAINING_ERROR", error_message=message,
                                 completed_at=utcnow(), log_line=message)  # fmt: skip
        self.wake.set()

    def on_worker_lost(self, training_id: str) -> None:
        training = self.get(training_id)
        if training is None:
            return
        if training.crashes + 1 >= MAX_CRASHES:
            self._transition(
                training_id,
                ERROR,
                error_code="WORKER_LOST",
                error_message=f"the worker stopped {MAX_CRASHES} times while training; not tried again",
                completed_at=utcnow(),
                crashes=training.crashes + 1,
                log_line="the worker stopped again; giving up",
            )
            return
        self._transition(training_id, QUEUED, crashes=training.crashes + 1,
                         log_line="the worker stopped; resuming from the last checkpoint")  # fmt: skip

    def _record(self, training_id: str, result: TrainingSummary) -> None:
        with self.sessions.begin() as session:
            training = session.get(Training, training_id)
            if training is not None and training.status == PROCESSING:
                training.step, training.losses = result.step, result.losses

    async def _finish(self, training_id: str, result: TrainingSummary) -> None:
        try:
            await self._register(training_id, result)
        except Exception as error:  # the training still ends, with the reason
            log.exception("registering the LoRA of %s failed", training_id)
            self._transition(training_id, ERROR, error_code="TRAINING_ERROR", completed_at=utcnow(),
                             error_message=f"registering the LoRA failed: {error}", log_line=str(error))  # fmt: skip
        finally:
            self._finishing.discard(training_id)

    async def _register(self, training_id: str, result: TrainingSummary) -> None:
        self._record(training_id, result)
        training = self.get(training_id)
        if training is None or training.status != PROCESSING:
            return
        lora = Path(result.lora_path)
        staged = lora.with_suffix(".staged")
        try:
            await asyncio.to_thread(shutil.copyfile, lora, staged)
            sha256, size = await asyncio.to_thread(self.loras.add, staged, "lora", True, training.owner_key_id)
        finally:
            staged.unlink(missing_ok=True)  # moved into the LoRA store, unless that failed
        self.loras.register(Caller(training.owner_key_id, ""), training.lora_name, sha256, size)
        self._transition(
            training_id, SUCCESS, completed_at=utcnow(),
            log_line=f"done: {result.step} steps; registered as LoRA {training.lora_name!r}",
        )  # fmt: skip

    # ---- the one place a training's status changes ------------------------------------------

    def _transition(self, training_id: str, status: str, *, log_line: str | None = None, **fields) -> None:
        with self.sessions.begin() as session:
            training = session.get(Training, training_id)
            if training is None or training.status in TERMINAL:
                return
            training.status = status
            for name, value in fields.items():
                setattr(training, name, value)
            if log_line:
                training.logs += f"{_stamp()} {log_line}\n"
        self.hub.publish(training_id, {"type": "status", "status": status})
        if status in TERMINAL:
            self.hub.finish(training_id)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")
