"""What the runner does with each event a worker pool reports.

An edit's events move its prediction along (Started: processing; Done: its outputs are stored; Failed,
Cancelled: it ends); a training's events go to the trainings runner. A worker that dies takes its jobs
with it: each is failed, re-queued (the server is stopping; or, once, the pool lost the worker with no
fault of its jobs: a Ray actor or its node) or told as the cancel or timeout that killed it. When no
worker can load the model, nothing queued could ever run: it is failed, with why.
"""

from __future__ import annotations

from sqlalchemy import select

from ..schema import Status
from ..store.models import Prediction, utcnow
from ..worker.messages import (
    Cancelled,
    Died,
    Done,
    Failed,
    LoadFailed,
    Progress,
    Ready,
    Started,
    TrainingEvent,
    WorkerEvent,
    WorkerState,
)
from ..worker.pool_protocol import WorkerView
from .results import Results
from .run_context import RunContext
from .timeouts import Deadlines


class WorkerEvents:
    def __init__(self, context: RunContext, results: Results, deadlines: Deadlines, trainings=None):
        self.context = context
        self.results = results
        self.deadlines = deadlines
        self.trainings = trainings

    def on_event(self, worker: WorkerView, event: WorkerEvent) -> None:
        context, lifecycle = self.context, self.context.lifecycle
        match event:
            case Ready() | LoadFailed():
                context.metrics.count_workers(context.pool.workers())
                if isinstance(event, LoadFailed) and all(w.state == WorkerState.failed for w in context.pool.workers()):
                    self._fail_queued(f"no worker can load the model: {event.reason}")
            case Died(exit_code, job_ids, requeue):
                context.metrics.worker_restarts.inc()
                context.metrics.count_workers(context.pool.workers())
                for job_id in job_ids:
                    if job_id.startswith("training_"):
                        self.trainings.on_worker_lost(job_id)
                    else:
                        self._on_lost(job_id, exit_code, requeue)
                return
            case Started(job_id):
                lifecycle.change(job_id, Status.processing)
            case Progress(job_id, step, total, preview):
                context.hub.publish(job_id, {"type": "progress", "step": step, "total": total, "preview": preview})
            case Done(job_id, result):
                context.spawn(self.results.finish(job_id, result), finishing=True)
            case Failed(job_id, code, message):
                lifecycle.fail(job_id, code, message)
            case Cancelled(job_id):
                self._on_cancelled(job_id)
            case _ if isinstance(event, TrainingEvent):
                self.trainings.on_worker_event(event)
                return
        context.wake.set()

    def _fail_queued(self, reason: str) -> None:
        """Nothing will ever run what waits: end it now, with the reason, rather than leave it queued."""
        with self.context.sessions() as session:
            waiting = list(session.scalars(select(Prediction.id).where(Prediction.status == Status.created)))
        for prediction_id in waiting:
            self.context.lifecycle.fail(prediction_id, "MODEL_UNAVAILABLE", reason)

    def _on_lost(self, prediction_id: str, exit_code: int | None, requeue: bool = False) -> None:
        if prediction_id in self.deadlines.timed_out:  # killed because it ignored the timeout's cancel
            self._on_cancelled(prediction_id)
            return
        if prediction_id in self.deadlines.cancel_requested:  # killed because it ignored a user's cancel
            self._on_cancelled(prediction_id)
            return
        if self.context.draining:
            self.context.lifecycle.change(prediction_id, Status.created, log_line="re-queued: the server is stopping")
            return
        if requeue and self._attempts(prediction_id) < self._max_attempts():
            self.context.lifecycle.change(prediction_id, Status.created, log_line="re-queued: its worker was lost")
            self.context.wake.set()  # another worker may be free already
            return
        self.context.lifecycle.fail(
            prediction_id,
            "WORKER_LOST",
            f"the worker process stopped unexpectedly (exit code {exit_code}) while running this prediction; "
            "it has been restarted, so a new prediction can run",
        )

    def _attempts(self, prediction_id: str) -> int:
        prediction = self.context.get(prediction_id)
        return prediction.attempts if prediction is not None else 0

    @staticmethod
    def _max_attempts() -> int:
        from .runner import MAX_ATTEMPTS  # here, not at the top: the runner imports this module

        return MAX_ATTEMPTS

    def _on_cancelled(self, prediction_id: str) -> None:
        lifecycle, deadlines = self.context.lifecycle, self.deadlines
        if prediction_id in deadlines.timed_out:
            deadlines.timed_out.discard(prediction_id)
            lifecycle.fail(prediction_id, "EXECUTION_TIMEOUT", f"it ran longer than {deadlines.execution_timeout:g} s")
        elif self.context.draining and prediction_id not in deadlines.cancel_requested:
            prediction = self.context.get(prediction_id)
            lifecycle.change(
                prediction_id,
                Status.created,
                attempts=prediction.attempts - 1,
                log_line="re-queued: the server is stopping",
            )
        else:
            deadlines.cancel_requested.discard(prediction_id)
            lifecycle.change(prediction_id, Status.cancelled, completed_at=utcnow(), log_line="cancelled while running")
