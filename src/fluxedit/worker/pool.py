"""A pool of worker child processes on this machine, one per GPU (one on a CPU-only machine).

It implements the WorkerPool protocol (worker/pool_protocol.py), the only face the runner sees. A
reader thread per child turns pipe messages into calls on the event loop, so the subscriber (the
runner) only ever runs on the loop. The handles below are this pool's own; callers get WorkerViews.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from ..config import EngineConfig
from ..store.files import LocalStoreReader
from .child import child_main
from .messages import (
    JOB_ENDS,
    Cancel,
    Died,
    EditJob,
    Failed,
    FromWorker,
    LoadFailed,
    Ready,
    RunBatch,
    RunJob,
    Stop,
    TrainingJob,
    TrainSlice,
    WorkerInfo,
    WorkerState,
)
from .pool_protocol import EventHandler, WorkerView

log = logging.getLogger(__name__)
RESTART_DELAYS = (0.0, 1.0, 5.0, 15.0, 60.0)  # after repeated crashes, wait longer before starting again
PIPE_BUFFER_BYTES = 8 << 20  # a result's few MB of images fit in the pipe at once (the kernel may cap it lower)


@dataclass
class WorkerHandle:
    name: str
    visible_device: str | None
    state: WorkerState = WorkerState.starting
    reason: str | None = None
    job_ids: list[str] = field(default_factory=list)  # what it runs now: one job, or a batch
    info: WorkerInfo | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    process: multiprocessing.Process | None = None
    conn: Connection | None = None

    def view(self) -> WorkerView:
        pid = self.process.pid if self.process is not None else None
        return WorkerView(self.name, self.state, self.reason, self.info, tuple(self.job_ids), self.restarts, pid)


def visible_gpus() -> list[str]:
    """GPU indices to run workers on, found without importing torch (only engine/ may)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def _widen(conn: Connection) -> None:
    """Give the pipe (a socket pair on Unix) room for a whole result. With the default ~200 KB, a child sending
    a few MB of images waits for the reader thread to drain each part: a round of thread wake-ups per part."""
    with contextlib.suppress(OSError):  # not a socket (another platform): the default buffers still work
        end = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER_BYTES)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_BUFFER_BYTES)
        finally:
            end.close()  # only the duplicate: the option stays on the socket both descriptors share


class LocalWorkerPool:
    def __init__(self, config: EngineConfig, count: int, reader: LocalStoreReader):
        self.config = config
        self.reader = reader  # how a child reads the inputs and LoRAs its jobs name
        self.on_event: EventHandler = lambda worker, event: None
        self.context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        gpus = visible_gpus() if config.device in ("auto", "cuda") else []
        count = count or max(1, len(gpus))
        self._workers = [
            WorkerHandle(name=f"worker-{i}", visible_device=gpus[i] if i < len(gpus) else None) for i in range(count)
        ]

    def subscribe(self, handler: EventHandler) -> None:
        self.on_event = handler

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for worker in self._workers:
            self._spawn(worker)

    def _spawn(self, worker: WorkerHandle) -> None:
        parent_end, child_end = self.context.Pipe(duplex=True)
        for end in (parent_end, child_end):
            _widen(end)
        process = self.context.Process(
            target=child_main,
            args=(child_end, self.config, worker.visible_device, self.reader),
            name=f"fluxedit-{worker.name}",
            daemon=True,
        )
        process.start()
        child_end.close()
        worker.process, worker.conn = process, parent_end
        worker.state, worker.reason, worker.job_ids = WorkerState.starting, None, []
        threading.Thread(target=self._read, args=(worker, parent_end, process), daemon=True).start()

    def _read(self, worker: WorkerHandle, conn: Connection, process) -> None:
        """Runs in a thread: forwards each message, then the child's death, to the loop."""
        try:
            while True:
                message = conn.recv()
                self.loop.call_soon_threadsafe(self._handle, worker, process, message)
        except (EOFError, OSError):
            process.join(timeout=10)
            self.loop.call_soon_threadsafe(self._on_death, worker, process, process.exitcode)

    def _handle(self, worker: WorkerHandle, process, message: FromWorker) -> None:
        if process is not worker.process:
            return  # a message from a child that was already replaced
        match message:
            case Ready(info):
                worker.state, worker.info, worker.crashes_in_a_row = WorkerState.ready, info, 0
            case LoadFailed(reason):
                worker.state, worker.reason = WorkerState.failed, reason
                log.error("%s could not load the model: %s", worker.name, reason)
            case _ if isinstance(message, JOB_ENDS) and message.job_id in worker.job_ids:
                worker.job_ids.remove(message.job_id)
                if isinstance(message, Failed) and message.code == "OUT_OF_MEMORY":
                    worker.state = WorkerState.stopping  # it exits to free the GPU; no work until it is back
                elif not worker.job_ids and worker.state == WorkerState.busy:
                    worker.state = WorkerState.ready
        self.on_event(worker.view(), message)

    def _on_death(self, worker: WorkerHandle, process, exit_code: int | None) -> None:
        if process is not worker.process:
            return
        was = worker.state
        job_ids = tuple(worker.job_ids)
        if was == WorkerState.failed or self.stopping:
            worker.state = WorkerState.stopped if self.stopping else WorkerState.failed
            return
        worker.crashes_in_a_row += 1
        worker.restarts += 1
        log.warning("%s stopped (exit code %s) while %s; restarting", worker.name, exit_code, was)
        worker.state, worker.job_ids = WorkerState.starting, []
        self.on_event(worker.view(), Died(exit_code, job_ids))
        delay = RESTART_DELAYS[min(worker.crashes_in_a_row - 1, len(RESTART_DELAYS) - 1)]
        self.loop.call_later(delay, self._restart, worker)

    def _restart(self, worker: WorkerHandle) -> None:
        if not self.stopping:
            self._spawn(worker)

    # ---- the WorkerPool protocol ------------------------------------------------------------

    def workers(self) -> tuple[WorkerView, ...]:
        return tuple(worker.view() for worker in self._workers)

    def free_worker(self) -> WorkerView | None:
        return next((w.view() for w in self._workers if w.state == WorkerState.ready), None)

    def _ready(self, name: str) -> WorkerHandle:
        worker = next(w for w in self._workers if w.name == name)
        if worker.state != WorkerState.ready:
            raise RuntimeError(f"{name} is {worker.state}, not ready: it cannot take a job")
        return worker

    def submit(self, worker: str, jobs: Sequence[EditJob]) -> None:
        handle = self._ready(worker)
        handle.state, handle.job_ids = WorkerState.busy, [job.id for job in jobs]
        with contextlib.suppress(OSError):  # a child that just died: its death event fails these jobs
            handle.conn.send(RunJob(jobs[0]) if len(jobs) == 1 else RunBatch(tuple(jobs)))

    def submit_training(self, worker: str, job: TrainingJob) -> None:
        handle = self._ready(worker)
        handle.state, handle.job_ids = WorkerState.busy, [job.id]
        with contextlib.suppress(OSError):
            handle.conn.send(TrainSlice(job))

    def cancel(self, job_id: str) -> None:
        for worker in self._workers:
            if job_id in worker.job_ids and worker.conn is not None:
                with contextlib.suppress(OSError):  # a dying child: its death event ends the job
                    worker.conn.send(Cancel(job_id))

    def kill(self, job_id: str) -> None:
        for worker in self._workers:
            if job_id in worker.job_ids and worker.process is not None:
                worker.process.kill()

    def batch_of(self, job_id: str) -> list[str]:
        return next((list(w.job_ids) for w in self._workers if job_id in w.job_ids), [])

    def busy_job_ids(self) -> list[str]:
        return [job_id for w in self._workers if w.state == WorkerState.busy for job_id in w.job_ids]

    async def close(self) -> None:
        self.stopping = True
        for worker in self._workers:
            if worker.conn is not None:
                with contextlib.suppress(OSError):
                    worker.conn.send(Stop())
        for worker in self._workers:
            if worker.process is not None:
                await asyncio.to_thread(worker.process.join, 10)
                if worker.process.is_alive():
                    worker.process.kill()
            worker.state = WorkerState.stopped
