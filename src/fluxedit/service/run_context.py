"""What the runner's parts share: the store, the worker pool, the lifecycle, the dispatcher's wake-up.

One object, built by the Runner and handed to each part (preparation, dispatch, timeouts, worker events,
results), so a part names what it uses (`context.pool`, `context.lifecycle`) and the pool can be attached
after the parts exist. Background tasks (preparing inputs, storing results) are kept here too, so a stop
can cancel them all and a failure is logged, never lost.
"""

from __future__ import annotations

import asyncio
import logging
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

    def get(self, prediction_id: str) -> Prediction | None:
        with self.sessions() as session:
            return session.get(Prediction, prediction_id)

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runner task failed", exc_info=task.exception())

    def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
