"""A pool of worker child processes on this machine, one per GPU (one on a CPU-only machine).

The runner talks to the pool through `submit`, `cancel` and the events it
receives; a pool on other machines (Ray) can replace this one behind the same
methods. A reader thread per child turns pipe messages into calls on the
event loop, so the runner only ever runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from ..config import EngineConfig
from .child import child_main
from .protocol import Job

log = logging.getLogger(__name__)
RESTART_DELAYS = (0.0, 1.0, 5.0, 15.0, 60.0)
# Messages after which a job no longer occupies its worker (a training slice pauses or ends).
ENDS = (
    "done",
    "failed",
    "cancelled",
    "train_paused",
    "train_done",
    "train_failed",
    "train_cancelled",
)  # after repeated crashes, wait longer before starting again

EventHandler = Callable[["WorkerHandle", tuple], None]


@dataclass
class WorkerHandle:
    name: str
    visible_device: str | None
    state: str = "starting"  # starting, ready, busy, failed, stopped
    reason: str | None = None
    job_ids: list[str] = field(default_factory=list)  # what it runs now: one job, or a batch
    info: dict = field(default_factory=dict)
    restarts: int = 0
    crashes_in_a_row: int = 0
    process: multiprocessing.Process | None = None
    conn: Connection | None = None


def visible_gpus() -> list[str]:
    """GPU indices to run workers on, found without importing torch (only engine/ may)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


class LocalWorkerPool:
    def __init__(
        self,
        config: EngineConfig,
        count: int,
        on_event: EventHandler,
    ):
        self.config = config
        self.on_event = on_event
        self.context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        gpus = visible_gpus() if config.device in ("auto", "cuda") else []
        count = count or max(1, len(gpus))
        self.workers = [
            WorkerHandle(name=f"worker-{i}", visible_device=gpus[i] if i < len(gpus) else None) for i in range(count)
        ]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: WorkerHandle) -> None:
        parent_end, child_end = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=child_main,
            args=(child_end, self.config, worker.visible_device),
            name=f"fluxedit-{worker.name}",
            daemon=True,
        )
        process.start()
        child_end.close()
        worker.process, worker.conn = process, parent_end
        worker.state, worker.reason, worker.job_ids = "starting", None, []
        threading.Thread(target=self._read, args=(worker, parent_end, process), daemon=True).start()

    def _read(self, worker: WorkerHandle, conn: Connection, process) -> None:
        """Runs in a thread: forwards each message, then the child's death, to the loop."""
        try:
            while True:
                message = conn.recv()
                self.loop.call_soon_threadsafe(self._handle, worker, process, message)
        except (EOFError, OSError):
            process.join(timeout=10)
            self.loop.call_soon_threadsafe(self._handle, worker, process, ("died", process.exitcode))

    def _handle(self, worker: WorkerHandle, process, message: tuple) -> None:
        if process is not worker.process:
            return  # a message from a child that was already replaced
        kind = message[0]
        if kind == "ready":
            worker.state, worker.info, worker.crashes_in_a_row = "ready", message[1], 0
        elif kind == "load_failed":
            worker.state, worker.reason = "failed", message[1]
            log.error("%s could not load the model: %s", worker.name, message[1])
        elif kind in ENDS and message[1] in worker.job_ids:
            worker.job_ids.remove(message[1])
            if kind == "failed" and message[2] == "OUT_OF_MEMORY":
                worker.state = "stopping"  # it exits to free the GPU; take no work until it is back
            elif not worker.job_ids and worker.state == "busy":
                worker.state = "ready"
        elif kind == "died":
            self._on_death(worker, message)
            return
        self.on_event(worker, message)

    def _on_death(self, worker: WorkerHandle, message: tuple) -> None:
        was = worker.state
        job_ids = list(worker.job_ids)
        if was == "failed" or self.stopping:
            worker.state = "stopped" if self.stopping else "failed"
            return
        worker.crashes_in_a_row += 1
        worker.restarts += 1
        log.warning("%s stopped (exit code %s) while %s; restarting", worker.name, message[1], was)
        self.on_event(worker, ("died", message[1], job_ids))
        delay = RESTART_DELAYS[min(worker.crashes_in_a_row - 1, len(RESTART_DELAYS) - 1)]
        worker.state, worker.job_ids = "starting", []
        self.loop.call_later(delay, self._restart, worker)

    def _restart(self, worker: WorkerHandle) -> None:
        if not self.stopping:
            self._spawn(worker)

    def free_worker(self) -> WorkerHandle | None:
        return next((w for w in self.workers if w.state == "ready"), None)

    def submit(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        """Hand one job, or several of the same size and settings to run as one batch, to a ready worker."""
        worker.state, worker.job_ids = "busy", [job["id"] for job in jobs]
        with contextlib.suppress(OSError):  # a child that just died: its death event fails these jobs
            worker.conn.send(("run", jobs[0]) if len(jobs) == 1 else ("run_batch", jobs))

    def submit_training(self, worker: WorkerHandle, job: dict) -> None:
        """Hand one slice of a training to a ready worker."""
        worker.state, worker.job_ids = "busy", [job["id"]]
        with contextlib.suppress(OSError):
            worker.conn.send(("train", job))

    def cancel(self, job_id: str) -> None:
        for worker in self.workers:
            if job_id in worker.job_ids and worker.conn is not None:
                with contextlib.suppress(OSError):  # a dying child: its death event ends the job
                    worker.conn.send(("cancel", job_id))

    def kill(self, job_id: str) -> None:
        """Stop the child running `job_id` hard (it ignored a cancel); it is restarted."""
        for worker in self.workers:
            if job_id in worker.job_ids and worker.process is not None:
                worker.process.kill()

    def batch_of(self, job_id: str) -> list[str]:
        """Every job running beside `job_id` on its worker (itself included): what killing that worker would end."""
        return next((list(w.job_ids) for w in self.workers if job_id in w.job_ids), [])

    def busy_job_ids(self) -> list[str]:
        return [job_id for w in self.workers if w.state == "busy" for job_id in w.job_ids]

    async def stop(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.conn is not None:
                with contextlib.suppress(OSError):
                    worker.conn.send(("stop",))
        for worker in self.workers:
            if worker.process is not None:
                await asyncio.to_thread(worker.process.join, 10)
                if worker.process.is_alive():
                    worker.process.kill()
            worker.state = "stopped"
