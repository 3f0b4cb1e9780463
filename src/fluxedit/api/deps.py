"""Shared request plumbing: the service container, the caller's key, waits and base URLs.

Handlers name what they need with the Annotated aliases at the bottom (ServicesDep, CallerDep, ...);
FastAPI resolves each once per request, in the order a handler's signature lists them.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from httpx import URL

from ..schema import InputError
from ..service.access import is_loopback_host, why_a_key_is_needed
from ..service.caller_predictions import CallerPredictions
from ..service.keys import Caller
from ..service.services import Services
from .errors import ApiError

MAX_WAIT_S = 60.0
OPEN_CALLER = Caller(None, "open")
# Declared for the API reference (so a generated client sends the key); the key itself is read below.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="Authorization: Bearer <API key>")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey", description="The API key")


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


def caller(
    request: Request,
    found: ServicesDep,
    _bearer: Annotated[object, Security(BEARER)],
    _api_key: Annotated[object, Security(API_KEY_HEADER)],
) -> Caller:
    """The key's owner; 401 for a missing, unknown or revoked key once keys have existed (or beyond loopback)."""
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


def query_or_header_wait(
    request: Request,
    wait: Annotated[
        str | None, Query(description="Seconds to wait for the end: a number from 0 to 60 (or `Prefer: wait=N`).")
    ] = None,
) -> float:
    return requested_wait(request, wait)


def header_wait(request: Request) -> float:
    """Only `Prefer: wait=N`: a create endpoint's query string is not ours to read."""
    return requested_wait(request, None)


def base_url(request: Request, found: ServicesDep) -> str:
    configured = found.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def own_hosts(request: Request, found: ServicesDep) -> set[str]:
    """host:port pairs under which clients reach this server (for recognising our own file URLs)."""
    hosts = set()
    for url in (str(request.base_url), found.settings.public_url):
        if url:
            parsed = URL(url)
            hosts.add(f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}")
    server = request.scope.get("server")  # the address the connection came in on, behind any proxy's Host
    if server and server[1]:
        hosts.add(f"{server[0]}:{server[1]}")
    return hosts


CallerDep = Annotated[Caller, Depends(caller)]
BaseUrlDep = Annotated[str, Depends(base_url)]
OwnHostsDep = Annotated[set[str], Depends(own_hosts)]
WaitDep = Annotated[float, Depends(query_or_header_wait)]  # ?wait=N or Prefer: wait=N, in seconds
PreferWaitDep = Annotated[float, Depends(header_wait)]  # Prefer: wait=N only


def caller_predictions(found: ServicesDep, who: CallerDep) -> CallerPredictions:
    return CallerPredictions(found, who)


CallerPredictionsDep = Annotated[CallerPredictions, Depends(caller_predictions)]
