"""Choosing the next work for a free worker: predictions first, keys in turn; trainings when none waits.

The database is the queue: `created` predictions whose inputs are ready wait there, oldest first. Keys
with waiting work take turns (service/fairness.py); the key whose turn it is gives the batch's first
prediction, and others that share its batch key join it (service/batching.py). A training gets a slice
only on a worker that no prediction wants, so a prediction waits at most one slice.

A pool of workers that come and go (ClusterPool: Ray actors) is told after each round how many ready
predictions still wait, so it can grow (or shrink later), and each batch goes to the free worker that
already holds its LoRA adapters when there is one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..schema import Status
from ..store.models import Prediction, utcnow
from ..worker.pool_protocol import ClusterPool, WorkerView
from .batching import batch_limit, fill_batch, images, prediction_batch_key
from .fairness import KeyTurns
from .jobs import edit_job
from .preparation import Preparation
from .run_context import RunContext
from .timeouts import Deadlines

log = logging.getLogger(__name__)
BATCH_SCAN = 64  # queued predictions of the key whose turn it is looked at when filling a batch
BATCH_KEYS, BATCH_SCAN_PER_KEY = 8, 8  # and of the next keys in turn, to share a batch between keys
DEMAND_SCAN = 256  # waiting predictions grouped by batch to size a cluster pool
DEMAND_REFRESH_S = 1.0  # a steady queue is grouped again at most this often (wake-ups come at every step)


class Dispatcher:
    def __init__(
        self,
        context: RunContext,
        preparation: Preparation,
        deadlines: Deadlines,
        *,
        batch_max: int,
        batch_wait: float,
        trainings=None,
    ):
        self.context = context
        self.preparation = preparation
        self.deadlines = deadlines
        self.batch_max = batch_max  # images one batch may hold; 1 runs every prediction alone; 0: by device
        self.batch_wait = batch_wait  # seconds to hold a batch open for similar work
        self.trainings = trainings
        self.turns = KeyTurns()  # keys with queued work take turns at the workers
        self._demand: tuple[int, int, int, float] | None = None  # (waiting, limit, batches, when) last counted

    async def run_forever(self) -> None:
        wake = self.context.wake
        while True:
            await wake.wait()
            wake.clear()
            try:
                await self.dispatch_once()
            except Exception:  # never let one bad row stop all dispatching
                log.exception("dispatching failed; trying again on the next wake-up")
                await asyncio.sleep(0.5)
                wake.set()

    async def dispatch_once(self) -> None:
        pool = self.context.pool
        while pool.free_worker() is not None and (batch := self.next_batch()):
            if self.batch_wait > 0 and images(batch) < self._limit():
                await asyncio.sleep(self.batch_wait)  # let similar work arrive to share the batch
                batch = self.next_batch()
            worker = self._free_worker_for(batch)
            if worker is None or not batch:
                break
            self.start(batch, worker)
        self._dispatch_training()
        if isinstance(pool, ClusterPool):  # a worker runs a batch at a time: ask for one per batch that waits
            pool.want_workers(self._batches_waiting())

    def _free_worker_for(self, batch: list[Prediction]) -> WorkerView | None:
        """The free worker to run `batch` on: on a ClusterPool, one holding its LoRAs when there is one."""
        pool = self.context.pool
        if not batch or not isinstance(pool, ClusterPool):
            return pool.free_worker()
        return pool.free_worker_for([lora["digest"] for lora in batch[0].lora_files or []])

    def _batches_waiting(self) -> int:
        """The batches the ready predictions make: per group that can share a batch (prediction_batch_key), its
        images over the batch limit, rounded up. The oldest DEMAND_SCAN are grouped (past those, a queue wants
        more workers than any pool has); counted again when the queue changes, or after DEMAND_REFRESH_S."""
        limit, waiting = self._limit(), self._queued()
        if limit <= 1 or waiting == 0:
            return waiting  # nothing batches: a worker per prediction
        now = time.monotonic()
        if (
            self._demand is not None
            and self._demand[:2] == (waiting, limit)
            and now - self._demand[3] < DEMAND_REFRESH_S
        ):
            return self._demand[2]
        with self.context.sessions() as session:
            ready = select(Prediction).where(Prediction.status == Status.created, Prediction.inputs_ready)
            oldest = list(session.scalars(ready.order_by(Prediction.created_at, Prediction.id).limit(DEMAND_SCAN)))
        records = self.context.files.records(file_id for p in oldest for file_id in p.input_files)  # one query
        groups: Counter[tuple] = Counter()
        for prediction in oldest:
            groups[prediction_batch_key(prediction, records.get)] += images([prediction])
        batches = sum(math.ceil(count / limit) for count in groups.values())
        batches += math.ceil(max(0, waiting - len(oldest)) / limit)
        self._demand = (waiting, limit, batches, now)
        return batches

    def _queued(self) -> int:
        """Predictions ready to run that wait for a worker."""
        with self.context.sessions() as session:
            ready = select(func.count()).where(Prediction.status == Status.created, Prediction.inputs_ready)
            return session.scalar(ready) or 0

    def _dispatch_training(self) -> None:
        """Give trainings a slice on the workers that predictions leave free."""
        if self.trainings is None or self.context.draining:
            return
        pool = self.context.pool
        while (worker := pool.free_worker()) is not None and not self.next_batch():
            job = self.trainings.next_slice()
            if job is None:
                return
            pool.submit_training(worker.name, job)

    def next_batch(self) -> list[Prediction]:
        """The oldest ready prediction of the key whose turn it is (self.turns), with others that can share its
        batch (same batch key), taken from the keys in turn order, one each in rounds."""
        with self.context.sessions() as session:
            oldest = dict(
                session.execute(
                    select(Prediction.owner_key_id, func.min(Prediction.created_at))
                    .where(Prediction.status == Status.created, Prediction.inputs_ready)
                    .group_by(Prediction.owner_key_id)
                ).all()
            )
            if not oldest:
                return []
            keys = self.turns.order(oldest)
            alone = self._limit() <= 1
            queues = [self._ready_of(session, keys[0], 1 if alone else BATCH_SCAN)]
            if not alone:
                queues += [self._ready_of(session, key, BATCH_SCAN_PER_KEY) for key in keys[1:BATCH_KEYS]]
        if not queues[0]:
            return self.next_batch()  # its first rows could not run and have just been failed: look again
        return queues[0] if alone else fill_batch(queues, self._limit(), self.context.files)

    def _ready_of(self, session: Session, key: str | None, limit: int) -> list[Prediction]:
        owned = Prediction.owner_key_id.is_(None) if key is None else Prediction.owner_key_id == key
        query = select(Prediction).where(Prediction.status == Status.created, Prediction.inputs_ready, owned)
        ready = list(session.scalars(query.order_by(Prediction.created_at, Prediction.id).limit(limit)))
        return [prediction for prediction in ready if self.preparation.runnable(prediction)]

    def _limit(self) -> int:
        return batch_limit(self.batch_max, self.context.pool)

    def start(self, batch: list[Prediction], worker: WorkerView) -> None:
        """Hand a batch to a free worker: each prediction becomes `starting`, its timeout starts. One that ended
        since it was read (a cancel, maybe on another replica) is left out; with none left nothing is handed out."""
        for prediction in batch:  # in batch order: the key whose turn it was counts as served first
            self.turns.served(prediction.owner_key_id)
        now = utcnow()
        note = f"starting on {worker.name}" + (f", in a batch of {len(batch)}" if len(batch) > 1 else "")
        started = []
        for prediction in batch:
            if self.context.lifecycle.change(
                prediction.id,
                Status.starting,
                started_at=now,
                attempts=prediction.attempts + 1,
                metrics_update={"queue_time": round((now - prediction.created_at).total_seconds(), 4)},
                log_line=note,
            ):
                self.deadlines.started(prediction.id)
                started.append(prediction)
        if started:
            self.context.pool.submit(worker.name, [edit_job(prediction, self.context.files) for prediction in started])
