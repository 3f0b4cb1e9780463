"""The prediction runner: the one face of the prediction lifecycle for the API and for the worker pool.

It builds and holds the parts, each in a module named for its job:
- intake.py       taking in a prediction (its checks, its inputs stored, its row inserted)
- preparation.py  fetching the inputs given as URLs, resolving LoRAs, pricing from the main image
- dispatch.py     choosing the next work (keys in turn; trainings when no prediction waits), handing it out
- batching.py     filling a batch;  jobs.py: building the jobs a worker runs
- timeouts.py     execution timeouts and cancel escalation
- worker_events.py  what each worker event does;  results.py: storing outputs
- lifecycle.py    the one function that changes a status, and its status-change event
- status_effects.py  what follows a change: the webhook, waking waiters, the metrics
The database is the queue, so a restart loses nothing: `start` recovers what a previous run left.
The runner talks to workers only through the WorkerPool protocol (worker/pool_protocol.py).

With several API replicas (service/leader.py) only the leader's runner is started: it dispatches and owns the
pool. A follower's runner takes in predictions and cancels queued ones; the cancel of a running one goes to the
leader (`forward_cancel`), and its wake-ups wake the leader's dispatcher (service/leader.py's SharedWake).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import RUNNING_STATUSES, EditInput, Status
from ..store.files import FileStore
from ..store.models import Prediction
from ..worker.messages import WorkerEvent
from ..worker.pool_protocol import WorkerPool, WorkerView
from .admission import Admission
from .dispatch import Dispatcher
from .events import EventHub
from .inputs import InputResolver
from .intake import Intake
from .keys import Caller, KeyRing
from .lifecycle import Lifecycle
from .metrics import ServiceMetrics
from .preparation import Preparation
from .results import Results
from .run_context import RunContext
from .status_effects import QueueGauge, subscribe_prediction_effects
from .timeouts import CANCEL_GRACE_S, Deadlines
from .worker_events import WorkerEvents

MAX_ATTEMPTS = 2  # a prediction interrupted by a server stop runs once more, then fails
STORE_RESULTS_TIMEOUT = 60.0  # a stop waits this long for finished work to be stored (an S3 upload, say)


class Runner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileStore,
        resolver: InputResolver,
        keys: KeyRing,
        hub: EventHub,
        metrics: ServiceMetrics,
        webhooks,
        *,
        price_per_image: float,
        max_queue: int,
        execution_timeout: float,
        max_queue_per_key: int = 0,
        rate_limit: int = 0,
        rate_limit_burst: int = 0,
        batch_max: int = 1,
        batch_wait: float = 0.0,
        lora_resolver=None,
        trainings=None,
        cancel_grace: float = CANCEL_GRACE_S,
        wake: asyncio.Event | None = None,
    ):
        self.keys = keys
        self.webhooks = webhooks  # PredictionWebhooks: the API registers its dialects' formats here
        self.trainings = trainings
        lifecycle = Lifecycle(sessions, Prediction, cleared_on_requeue=("started_at",))
        self.queue_gauge = QueueGauge(sessions, metrics)
        subscribe_prediction_effects(lifecycle, hub, metrics, webhooks)
        self.context = RunContext(sessions, files, hub, metrics, lifecycle, wake=wake or asyncio.Event())
        admission = Admission(
            max_queue=max_queue,
            max_queue_per_key=max_queue_per_key,
            rate_limit=rate_limit,
            burst=rate_limit_burst,
            sessions=sessions,
        )
        self.intake = Intake(self.context, admission, resolver, lora_resolver, price_per_image)
        self.preparation = Preparation(self.context, resolver, lora_resolver, price_per_image)
        self.deadlines = Deadlines(self.context, execution_timeout, cancel_grace)
        self.dispatcher = Dispatcher(
            self.context, self.preparation, self.deadlines, batch_max=batch_max, batch_wait=batch_wait,
            trainings=trainings,
        )  # fmt: skip
        self.events = WorkerEvents(self.context, Results(self.context), self.deadlines, trainings)
        self._dispatching: asyncio.Task | None = None
        self.leading = False  # started: this replica dispatches (always, on SQLite)
        self.forward_cancel: Callable[[str], None] | None = None  # a follower's way to the leader's workers

    @property
    def pool(self) -> WorkerPool | None:
        return self.context.pool

    @property
    def draining(self) -> bool:
        return self.context.draining

    def attach_pool(self, pool: WorkerPool) -> None:
        self.context.pool = pool
        pool.subscribe(self.on_worker_event)
        if self.trainings is not None:  # a follower takes trainings in too: they wake the leader
            self.trainings.attach(pool, self.context.wake)

    # ---- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous run (or a replica that led before this one) left, then start dispatching."""
        self.leading = True
        with self.context.sessions() as session:
            interrupted = list(session.scalars(select(Prediction).where(Prediction.status.in_(RUNNING_STATUSES))))
            unprepared = list(
                session.scalars(select(Prediction).where(Prediction.status == Status.created, ~Prediction.inputs_ready))
            )
        for prediction in interrupted:
            if prediction.attempts >= MAX_ATTEMPTS:
                self.context.lifecycle.fail(
                    prediction.id,
                    "WORKER_LOST",
                    "the server stopped while this prediction was running, on each of its "
                    f"{prediction.attempts} attempts; it was not tried again",
                )
            else:
                self.context.lifecycle.change(
                    prediction.id, Status.created, log_line="re-queued: the server stopped while it ran"
                )
        for prediction in unprepared:
            if prediction.batch_id is None:  # a batch's are fetched a few at a time: Batches.recover
                self.context.spawn(self.preparation.prepare(prediction.id))
        if self.trainings is not None:
            self.trainings.attach(self.pool, self.context.wake)
            self.trainings.recover()
        self._dispatching = asyncio.create_task(self.dispatcher.run_forever())
        self.context.wake.set()

    async def stop(self, drain_timeout: float) -> None:
        """Drain: running work may finish for `drain_timeout` s, then it is cancelled and re-queued."""
        self.context.draining = True
        if self._dispatching is not None:
            self._dispatching.cancel()
        deadline = time.monotonic() + drain_timeout
        while self.pool.busy_job_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for job_id in self.pool.busy_job_ids():
            self.pool.cancel(job_id)
        deadline = time.monotonic() + 10
        while self.pool.busy_job_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # A worker that is idle may have handed its result over a moment ago: store it before stopping.
        await self.context.wait_finishing(STORE_RESULTS_TIMEOUT, self.trainings.storing if self.trainings else set)
        self.context.cancel_tasks()

    # ---- creation, cancel, waiting --------------------------------------------------------

    async def create(
        self,
        caller: Caller,
        edit_input: EditInput,
        *,
        base_url: str,
        own_hosts: set[str],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        version: str | None = None,
        webhook_format: str | None = None,
        webhook_events: list[str] | None = None,
        admitted: bool = False,
    ) -> Prediction:
        """Queue a prediction. `admitted`: the caller already ran `admit` for it (before reading its uploads)."""
        if not admitted:
            self.admit(caller, edit_input.num_images)
        prediction = await self.intake.create(
            caller, edit_input, base_url=base_url, own_hosts=own_hosts, webhook_url=webhook_url,
            webhook_secret=webhook_secret, version=version, webhook_format=webhook_format,
            webhook_events=webhook_events,
        )  # fmt: skip
        if prediction.inputs_ready:
            self.context.wake.set()
        else:
            self.context.spawn(self.preparation.prepare(prediction.id))
        return prediction

    def admit(self, caller: Caller, num_images: int = 1) -> None:
        """The checks that need no inputs (rate, queue and spending limits): see Intake.admit."""
        self.intake.admit(caller, num_images)

    async def cancel(self, prediction_id: str) -> None:
        prediction = self.get(prediction_id)
        if prediction is None or prediction.status.ended:
            return
        if prediction.status == Status.created:
            lifecycle = self.context.lifecycle
            if lifecycle.change_many([prediction_id], Status.cancelled, only_from=Status.created,
                                     log_line="cancelled before it ran"):  # fmt: skip
                return
            # it has just started (another replica may have dispatched it): cancelled as a running one
        if self.leading:
            self.deadlines.cancel_running(prediction_id)
        elif self.forward_cancel is not None:
            self.forward_cancel(prediction_id)

    async def wait(self, prediction_id: str, timeout: float) -> Prediction | None:
        prediction = self.get(prediction_id)
        if prediction is None or prediction.status.ended or timeout <= 0:
            return prediction
        await self.context.hub.wait_finished(prediction_id, timeout)
        return self.get(prediction_id)

    def get(self, prediction_id: str) -> Prediction | None:
        return self.context.get(prediction_id)

    def on_worker_event(self, worker: WorkerView, event: WorkerEvent) -> None:
        """The pool's subscriber: see service/worker_events.py."""
        self.events.on_event(worker, event)
