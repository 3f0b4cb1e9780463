"""GET /health for load balancers and people; GET /metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import services

router = APIRouter(tags=["operations"])


def health_state(workers) -> tuple[str, str | None]:
    states = [w.state for w in workers]
    if "ready" in states:
        return "ready", None
    if "busy" in states:
        return "busy", None
    if states and all(s in ("failed", "stopped") for s in states):
        reasons = [w.reason for w in workers if w.reason]
        return "failed", reasons[0] if reasons else "every worker process stopped"
    return "starting", None


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    found = services(request)
    status, reason = health_state(found.pool.workers)
    body = {
        "status": status,
        "reason": reason,
        "workers": [
            {
                "name": w.name,
                "state": w.state,
                "reason": w.reason,
                "restarts": w.restarts,
                "pid": w.process.pid if w.process else None,
                **w.info,
            }
            for w in found.pool.workers
        ],
        "queue_depth": int(found.metrics.queue_depth._value.get()),
    }
    return JSONResponse(body, status_code=200 if status in ("ready", "busy") else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
