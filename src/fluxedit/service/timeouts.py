"""Timeouts and cancel escalation for running predictions.

A prediction that runs past the execution timeout is cancelled; a worker that ignores a cancel (a user's
or a timeout's) for `cancel_grace` seconds is killed, unless that would also end other predictions of
its batch that nobody asked to stop: then it is asked again later. The reasons are remembered, so the
end a worker reports (Cancelled, or its death) is told as what it was: a timeout or a user's cancel.
"""

from __future__ import annotations

import asyncio
import logging

from .run_context import RunContext

log = logging.getLogger(__name__)
CANCEL_GRACE_S = 30.0  # a worker that ignores a cancel this long is killed


class Deadlines:
    def __init__(self, context: RunContext, execution_timeout: float, cancel_grace: float = CANCEL_GRACE_S):
        self.context = context
        self.execution_timeout = execution_timeout
        self.cancel_grace = cancel_grace
        self.timed_out: set[str] = set()
        self.cancel_requested: set[str] = set()

    def started(self, prediction_id: str) -> None:
        """A prediction went to a worker: its execution timeout starts now."""
        asyncio.get_running_loop().call_later(self.execution_timeout, self._on_timeout, prediction_id)

    def cancel_running(self, prediction_id: str) -> None:
        """A user cancels a prediction that a worker runs: ask the worker, and kill it if it does not listen."""
        self.cancel_requested.add(prediction_id)
        self.context.pool.cancel(prediction_id)
        self._escalate_later(prediction_id)

    def _on_timeout(self, prediction_id: str) -> None:
        if prediction_id in self.context.pool.busy_job_ids():
            self.timed_out.add(prediction_id)
            self.context.pool.cancel(prediction_id)
            self._escalate_later(prediction_id)

    def _escalate_later(self, prediction_id: str) -> None:
        asyncio.get_running_loop().call_later(self.cancel_grace, self._kill_if_still_running, prediction_id)

    def _kill_if_still_running(self, prediction_id: str) -> None:
        pool = self.context.pool
        if prediction_id not in pool.busy_job_ids():
            return
        ending = self.cancel_requested | self.timed_out
        if any(job_id not in ending for job_id in pool.batch_of(prediction_id)):
            # Killing the worker would fail the rest of its batch: the cancelled one leaves it at the next step.
            # If the whole batch is stuck, each of the others times out, and then nobody is left to spare.
            self._escalate_later(prediction_id)
            return
        log.warning("worker ignored the cancel of %s; killing it", prediction_id)
        pool.kill(prediction_id)
