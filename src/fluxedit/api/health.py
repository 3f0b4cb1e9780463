"""GET /health for load balancers and people; GET /metrics for Prometheus."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..worker.messages import WorkerState
from ..worker.pool_protocol import WorkerView
from .deps import services

router = APIRouter(tags=["operations"])


def health_state(workers: Sequence[WorkerView]) -> tuple[str, str | None]:
    states = [w.state for w in workers]
    if WorkerState.ready in states:
        return "ready", None
    if WorkerState.busy in states:
        return "busy", None
    if states and all(s in (WorkerState.failed, WorkerState.stopped) for s in states):
        reasons = [w.reason for w in workers if w.reason]
        return "failed", reasons[0] if reasons else "every worker process stopped"
    return "starting", None


def worker_view(worker: WorkerView) -> dict:
    shown = {"name": worker.name, "state": worker.state.value, "reason": worker.reason}
    shown |= {"restarts": worker.restarts, "pid": worker.pid}
    return shown | (worker.info.as_dict() if worker.info else {})


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    found = services(request)
    workers = found.pool.workers()
    status, reason = health_state(workers)
    body = {
        "status": status,
        "reason": reason,
        "workers": [worker_view(w) for w in workers],
        "queue_depth": int(found.metrics.queue_depth._value.get()),
    }
    return JSONResponse(body, status_code=200 if status in ("ready", "busy") else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
