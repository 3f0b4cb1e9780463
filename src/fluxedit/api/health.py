"""GET /health for load balancers and people; GET /metrics for Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from ..worker.messages import WorkerState
from ..worker.pool_protocol import WorkerView
from .deps import ServicesDep

router = APIRouter(tags=["operations"])
HealthStatus = Literal["ready", "busy", "starting", "failed"]


class WorkerHealth(BaseModel):
    name: str
    state: WorkerState
    reason: str | None = None
    restarts: int = 0
    pid: int | None = None
    device: str | None = Field(None, description="Where its model runs, once loaded (cuda:0, cpu, ...).")
    memory_mode: str | None = None
    attention: str | None = None
    notes: list[str] | None = None


class Health(BaseModel):
    status: HealthStatus = Field(description="ready or busy: 200; starting or failed: 503.")
    reason: str | None = Field(None, description="Why it failed, when it did.")
    workers: list[WorkerHealth]
    queue_depth: int = Field(description="Predictions waiting for a worker.")
    role: Literal["single", "leader", "follower"] = Field(
        "single",
        description="single: the only replica (SQLite); with several on PostgreSQL, the leader runs the workers, "
        "a follower takes requests (ready, with no workers of its own).",
    )


def health_state(workers: Sequence[WorkerView]) -> tuple[HealthStatus, str | None]:
    states = [w.state for w in workers]
    if WorkerState.ready in states:
        return "ready", None
    if WorkerState.busy in states:
        return "busy", None
    if states and all(s in (WorkerState.failed, WorkerState.stopped) for s in states):
        reasons = [w.reason for w in workers if w.reason]
        return "failed", reasons[0] if reasons else "every worker process stopped"
    return "starting", None


def worker_health(worker: WorkerView) -> WorkerHealth:
    loaded = worker.info.as_dict() if worker.info else {}
    return WorkerHealth(name=worker.name, state=worker.state, reason=worker.reason, restarts=worker.restarts,
                        pid=worker.pid, **loaded)  # fmt: skip


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "No worker can take work (yet): starting, or failed."}},
)
async def health(found: ServicesDep) -> JSONResponse:
    role = found.replica.role
    workers = found.pool.workers() if role != "follower" else ()
    status, reason = health_state(workers) if role != "follower" else ("ready", None)
    body = Health(
        status=status,
        reason=reason,
        workers=[worker_health(w) for w in workers],
        queue_depth=await asyncio.to_thread(found.runner.queue_gauge.count),
        role=role,
    )
    # Fields a worker has not reported yet stay out, as before: a load balancer reads status alone.
    shown = body.model_dump(mode="json", exclude_none=False)
    shown["workers"] = [w.model_dump(mode="json", exclude_unset=True) for w in body.workers]
    return JSONResponse(shown, status_code=200 if status in ("ready", "busy") else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text format.",
        }
    },
)
async def metrics(found: ServicesDep) -> Response:
    exposition = await asyncio.to_thread(generate_latest, found.metrics.registry)  # the queue gauge counts in the store
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)
