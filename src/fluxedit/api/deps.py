"""Shared request plumbing: the service container, the caller's key, waits and base URLs."""

from __future__ import annotations

import re

from fastapi import Request
from httpx import URL

from ..service.keys import Caller
from ..service.services import Services
from ..store.models import Prediction
from .errors import ApiError, not_found

MAX_WAIT_S = 60.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:=(\d+(?:\.\d+)?))?", re.IGNORECASE)
OPEN_CALLER = Caller(None, "open")


def services(request: Request) -> Services:
    return request.app.state.services


def caller(request: Request) -> Caller:
    """The key's owner; 401 for a missing or wrong key while keys exist, the open caller otherwise."""
    found = services(request)
    key = _presented_key(request)
    if not found.keys.any_active():
        return OPEN_CALLER
    if key is None:
        raise ApiError(
            401, "an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    who = found.keys.authenticate(key)
    if who is None:
        raise ApiError(401, "the API key is not valid (unknown or revoked)", {"WWW-Authenticate": "Bearer"})
    return who


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def requested_wait(request: Request, query_wait: float | None, cap: float = MAX_WAIT_S) -> float:
    """Seconds to hold the answer: ?wait=N or 'Prefer: wait=N', at most `cap`."""
    if query_wait is not None:
        if query_wait < 0:
            raise ApiError(422, f"wait: must be at least 0 (got {query_wait:g})")
        return min(query_wait, cap)
    match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match is None:
        return 0.0
    return min(float(match.group(1)) if match.group(1) else cap, cap)


def base_url(request: Request) -> str:
    configured = services(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def own_hosts(request: Request) -> set[str]:
    """host:port pairs under which clients reach this server (for recognising our own file URLs)."""
    hosts = set()
    for url in (str(request.base_url), services(request).settings.public_url):
        if url:
            parsed = URL(url)
            hosts.add(f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}")
    server = request.scope.get("server")  # the address the connection came in on, behind any proxy's Host
    if server and server[1]:
        hosts.add(f"{server[0]}:{server[1]}")
    return hosts


def owned_prediction(request: Request, who: Caller, prediction_id: str) -> Prediction:
    """The prediction if this caller's key made it; 404 otherwise (another key's ids do not exist for it)."""
    prediction = services(request).runner.get(prediction_id)
    if prediction is None or prediction.owner_key_id != who.key_id:
        raise not_found(f"prediction {prediction_id}")
    return prediction
