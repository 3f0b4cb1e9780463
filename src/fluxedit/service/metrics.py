"""Prometheus metrics of one service instance (its own registry: tests run several apps in one process)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..worker.messages import WorkerState
from ..worker.pool_protocol import WorkerView


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("fluxedit_queue_depth", "Predictions waiting for a worker", registry=self.registry)
        self.predictions = Counter(
            "fluxedit_predictions", "Predictions that ended, by status", ["status"], registry=self.registry
        )
        self.predict_time = Histogram(
            "fluxedit_predict_seconds",
            "Seconds from a worker starting a prediction to its end",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "fluxedit_worker_restarts", "Worker processes restarted after they stopped", registry=self.registry
        )
        self.workers = Gauge("fluxedit_workers", "Worker processes by state", ["state"], registry=self.registry)

    def count_workers(self, workers: Iterable[WorkerView]) -> None:
        """The worker gauge: how many workers are in each state (every state has a value, 0 included)."""
        states = [worker.state for worker in workers]
        for state in WorkerState:
            self.workers.labels(state.value).set(states.count(state))
