"""What the runner's parts share: the store, the worker pool, the lifecycle, the dispatcher's wake-up.

One object, built by the Runner and handed to each part (preparation, dispatch, timeouts, worker events,
results), so a part names what it uses (`context.pool`, `context.lifecycle`) and the pool can be attached
after the parts exist. Background tasks (preparing inputs, storing results) are kept here too, so a stop
can cancel them all and a failure is logged, never lost. Tasks that finish work a worker already did
(storing a result) are `finishing`: a stop waits for them, since cancelling one loses a finished edit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from ..store.files import FileStore
from ..store.models import Prediction
from ..worker.pool_protocol import WorkerPool
from .events import EventHub
from .lifecycle import Lifecycle
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    sessions: sessionmaker[Session]
    files: FileStore
    hub: EventHub
    metrics: ServiceMetrics
    lifecycle: Lifecycle  # the predictions' one status-change function
    pool: WorkerPool | None = None  # attached once the pool exists (Runner.attach_pool)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # something may be ready to dispatch
    draining: bool = False  # the server is stopping: interrupted work goes back to the queue
    tasks: set[asyncio.Task] = field(default_factory=set)
    finishing: set[asyncio.Task] = field(default_factory=set)  # the subset a stop waits for

    def get(self, prediction_id: str) -> Prediction | None:
        with self.sessions() as session:
            return session.get(Prediction, prediction_id)

    def spawn(self, coroutine, *, finishing: bool = False) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        if finishing:
            self.finishing.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.finishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runner task failed", exc_info=task.exception())

    async def wait_finishing(self, timeout: float, others: Callable[[], set[asyncio.Task]] = set) -> None:
        """Let every task that stores finished work end (and `others`', e.g. trainings' checkpoints), for at
        most `timeout` s in all; one that starts meanwhile (a late result) is waited for too."""
        deadline = time.monotonic() + timeout
        while (pending := self.finishing | others()) and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(pending, timeout=left)

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
