"""Shared request plumbing: the service container, the caller's key, waits and base URLs."""

from __future__ import annotations

import math

from fastapi import Request
from httpx import URL

from ..schema import InputError
from ..service.access import is_loopback_host, why_a_key_is_needed
from ..service.keys import Caller
from ..service.services import Services
from ..store.models import Prediction
from .errors import ApiError, not_found

MAX_WAIT_S = 60.0
OPEN_CALLER = Caller(None, "open")


def services(request: Request) -> Services:
    return request.app.state.services


def caller(request: Request) -> Caller:
    """The key's owner; 401 for a missing, unknown or revoked key once keys have existed (or beyond loopback)."""
    found = services(request)
    host = found.settings.host
    arrived_on = (request.scope.get("server") or (None,))[0]  # the socket's own address, whatever the settings say
    if arrived_on and not is_loopback_host(arrived_on):
        host = arrived_on
    reason = why_a_key_is_needed(found.keys, host, found.settings.allow_unauthenticated, found.settings.data_dir)
    if reason is None:
        return OPEN_CALLER  # no key has ever existed and only this machine can connect (or it was allowed)
    key = _presented_key(request)
    if key is None:
        raise ApiError(401, reason, {"WWW-Authenticate": "Bearer"})
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


def requested_wait(request: Request, query_wait: str | float | None, cap: float = MAX_WAIT_S) -> float:
    """Seconds to hold the answer: ?wait=N or 'Prefer: wait=N', at most `cap` (a longer wait is cut to it).

    Anything but a finite number of seconds >= 0 is refused (422): a NaN or infinite value would reach the
    event loop's timers, which it breaks for every request. A bare 'Prefer: wait' asks for the cap.
    """
    if query_wait is not None:
        return min(_seconds(query_wait, "wait"), cap)
    preferred = _prefer_wait(request.headers.get("prefer", ""))
    if preferred is None:
        return 0.0
    if preferred == "":
        return cap
    return min(_seconds(preferred, "wait", " in the 'Prefer: wait' header"), cap)


def _prefer_wait(header: str) -> str | None:
    """The value of the `wait` preference ("" when bare), None without one; other preferences are ignored."""
    for preference in header.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "wait":
            return value.strip().strip('"')
    return None


def _seconds(value: str | float, field: str, where: str = "") -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(field, f"must be a number of seconds from 0 to {MAX_WAIT_S:g} (got {value!r}{where})")
    return seconds


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
