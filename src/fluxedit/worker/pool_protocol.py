"""The one interface between the service and its workers: what the runner may ask of any pool.

`LocalWorkerPool` (worker/pool.py: child processes on this machine) implements it; a pool of
workers elsewhere (Ray actors) implements the same methods and nothing above it changes. The
runner and the trainings runner import this module alone from worker/ (besides the messages) and
see workers only through `WorkerView` snapshots, never a pool's own handles.

Threading: every method is called on the service's event loop, and the pool calls its subscriber
there too, one event at a time, in the order each worker sent them.

A pool whose workers come and go (Ray actors on other machines) also implements `ClusterPool`: the
dispatcher tells it how much work waits (so it can grow and shrink) and asks it for the free worker
best placed for a job (LoRA affinity). The local pool has a fixed set of workers and needs neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .messages import EditJob, TrainingJob, WorkerEvent, WorkerInfo, WorkerState


@dataclass(frozen=True)
class WorkerView:
    """A worker as it was when the snapshot was taken (changing it changes nothing in the pool)."""

    name: str
    state: WorkerState
    reason: str | None = None  # why it failed, when it did
    info: WorkerInfo | None = None  # its device, once loaded
    job_ids: tuple[str, ...] = ()  # what it runs now: one job, a batch or a training slice
    restarts: int = 0
    pid: int | None = None  # the process, where a pool has one to show

    @property
    def on_gpu(self) -> bool:
        return self.info is not None and self.info.device.startswith("cuda")


EventHandler = Callable[[WorkerView, WorkerEvent], None]


@runtime_checkable
class WorkerPool(Protocol):
    def subscribe(self, handler: EventHandler) -> None:
        """Send every worker event to `handler` (with the worker's state after the event); one handler."""

    async def start(self) -> None:
        """Start the workers; they report Ready (or LoadFailed) as events."""

    async def close(self) -> None:
        """Ask every worker to stop, wait a little, then end them; their state becomes stopped."""

    def workers(self) -> tuple[WorkerView, ...]:
        """A snapshot of every worker."""

    def free_worker(self) -> WorkerView | None:
        """A worker that is ready for a job now, if any."""

    def submit(self, worker: str, jobs: Sequence[EditJob]) -> None:
        """Hand one job, or several of one batch key to run as one batch, to the ready worker named `worker`."""

    def submit_training(self, worker: str, job: TrainingJob) -> None:
        """Hand one training slice to the ready worker named `worker`."""

    def cancel(self, job_id: str) -> None:
        """Ask the worker running `job_id` to stop it (at its next step); it answers Cancelled or its end."""

    def kill(self, job_id: str) -> None:
        """End the worker running `job_id` hard (it ignored a cancel): every job on it is lost (Died)."""

    def batch_of(self, job_id: str) -> list[str]:
        """Every job running beside `job_id` on its worker, itself included: what a kill would end."""

    def busy_job_ids(self) -> list[str]:
        """Every job running on a worker now."""


@runtime_checkable
class ClusterPool(WorkerPool, Protocol):
    """A WorkerPool whose number of workers follows the queue, within bounds (worker/ray_pool.py)."""

    def want_workers(self, queued: int) -> None:
        """`queued` batches of ready predictions wait for a worker (one each; a batch is one prediction
        where nothing batches): start workers for them (never past the pool's maximum); workers idle for the
        pool's idle time stop again (never below its minimum)."""

    def free_worker_for(self, lora_digests: Sequence[str]) -> WorkerView | None:
        """A worker ready for a job that needs these LoRA adapters: one that already holds them all when
        there is one (no reload), else the one holding the fewest."""
