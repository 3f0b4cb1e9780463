"""A WorkerPool that runs jobs in this process, with no model: the runner's seam, tested honestly.

It implements worker/pool_protocol.py's WorkerPool and nothing more, and reads each job's inputs the way a
worker on another machine would: by file-store id, through a store reader, checked against size and sha256.
Each job answers its main input's bytes as its output image. A job whose id is in `hold` waits (as if
stuck in a long step) until it is cancelled.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

from PIL import Image

from fluxedit.store.files import LocalStoreReader
from fluxedit.worker.messages import (
    Cancelled,
    Done,
    EditJob,
    JobResult,
    Progress,
    Ready,
    Started,
    TrainFailed,
    TrainingJob,
    WorkerEvent,
    WorkerInfo,
    WorkerState,
)
from fluxedit.worker.pool_protocol import EventHandler, WorkerView


class InProcessPool:
    def __init__(self, reader: LocalStoreReader, count: int = 1):
        self.reader = reader
        self.names = [f"in-process-{i}" for i in range(count)]
        self.states = dict.fromkeys(self.names, WorkerState.starting)
        self.running: dict[str, list[str]] = {name: [] for name in self.names}
        self.handler: EventHandler = lambda worker, event: None
        self.hold: set[str] = set()  # job ids that do not end on their own
        self.read: list[str] = []  # every file id a job read, in order
        self.submitted: list[EditJob] = []

    def subscribe(self, handler: EventHandler) -> None:
        self.handler = handler

    async def start(self) -> None:
        for name in self.names:
            self.states[name] = WorkerState.ready
            self._emit(name, Ready(WorkerInfo(device="cpu", memory_mode="full", attention="sdpa")))

    async def close(self) -> None:
        for name in self.names:
            self.states[name] = WorkerState.stopped

    def workers(self) -> tuple[WorkerView, ...]:
        return tuple(self._view(name) for name in self.names)

    def free_worker(self) -> WorkerView | None:
        return next((self._view(n) for n in self.names if self.states[n] == WorkerState.ready), None)

    def submit(self, worker: str, jobs: Sequence[EditJob]) -> None:
        assert self.states[worker] == WorkerState.ready, f"{worker} was handed a job while {self.states[worker]}"
        self.states[worker], self.running[worker] = WorkerState.busy, [job.id for job in jobs]
        self.submitted += jobs
        asyncio.get_running_loop().call_soon(self._run, worker, list(jobs))

    def submit_training(self, worker: str, job: TrainingJob) -> None:
        self.states[worker], self.running[worker] = WorkerState.busy, [job.id]
        asyncio.get_running_loop().call_soon(self._end, worker, TrainFailed(job.id, "no trainer in this pool"))

    def cancel(self, job_id: str) -> None:
        for name in self.names:
            if job_id in self.running[name] and job_id in self.hold:
                self.hold.discard(job_id)
                asyncio.get_running_loop().call_soon(self._end, name, Cancelled(job_id))

    def finish_held(self, job_id: str) -> None:
        """A held job ends now with its result, as a worker's last step does, whatever happened meanwhile."""
        self.hold.discard(job_id)
        worker = next(name for name in self.names if job_id in self.running[name])
        image = next(job for job in self.submitted if job.id == job_id).images[0]
        self._end(worker, Done(job_id, self._result(self.reader.read_file(image.id, size=image.size,
                                                                          sha256=image.sha256))))  # fmt: skip

    def kill(self, job_id: str) -> None:
        raise AssertionError(f"{job_id} was killed, but every job of this pool obeys a cancel")

    def batch_of(self, job_id: str) -> list[str]:
        return next((list(jobs) for jobs in self.running.values() if job_id in jobs), [])

    def busy_job_ids(self) -> list[str]:
        return [job_id for name in self.names if self.states[name] == WorkerState.busy for job_id in self.running[name]]

    # ---- running a job here ---------------------------------------------------------------

    def _run(self, worker: str, jobs: list[EditJob]) -> None:
        for job in jobs:
            self._emit(worker, Started(job.id))
            images = [self.reader.read_file(i.id, size=i.size, sha256=i.sha256) for i in job.images]
            self.read += [image.id for image in job.images]
            self._emit(worker, Progress(job.id, 1, 1))
            if job.id in self.hold:
                continue
            self._end(worker, Done(job.id, self._result(images[0])))

    @staticmethod
    def _result(data: bytes) -> JobResult:
        """The job's main input, as its output."""
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
        return JobResult((data,), "png", width, height, 7, None, {"inference": 0.0}, ("ran here",), 1, "none")

    def _end(self, worker: str, event: WorkerEvent) -> None:
        self.running[worker].remove(event.job_id)
        if not self.running[worker]:
            self.states[worker] = WorkerState.ready
        self._emit(worker, event)

    def _emit(self, worker: str, event: WorkerEvent) -> None:
        self.handler(self._view(worker), event)

    def _view(self, name: str) -> WorkerView:
        info = WorkerInfo(device="cpu", memory_mode="full", attention="sdpa")
        return WorkerView(name, self.states[name], info=info, job_ids=tuple(self.running[name]))


class InProcessClusterPool(InProcessPool):
    """The same pool, as a ClusterPool: it records how many workers the dispatcher asks for, and prefers no
    worker for any LoRA (it has one kind of worker)."""

    def __init__(self, reader: LocalStoreReader, count: int = 1):
        super().__init__(reader, count)
        self.asked: list[int] = []

    def want_workers(self, queued: int) -> None:
        self.asked.append(queued)

    def free_worker_for(self, lora_digests: Sequence[str]) -> WorkerView | None:
        return self.free_worker()
