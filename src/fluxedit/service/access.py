"""Who may call without an API key: nobody, unless no key has ever existed and only this machine can
connect (or the operator said so). Authentication fails closed: revoking every key does not open it."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from .keys import KeyRing


def is_loopback_host(host: str) -> bool:
    """True only for addresses no other machine can reach; any host name but localhost counts as reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def why_a_key_is_needed(
    keys: KeyRing, host: str, allow_unauthenticated: bool, data_dir: Path | None = None
) -> str | None:
    """The reason a request must carry a valid key, or None while keyless callers are let in.

    `host` is where the request came in: the configured host, or the socket's own address when that is not
    loopback (a server started some other way, e.g. by uvicorn with --host 0.0.0.0)."""
    if keys.ever_had_keys():
        return "an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
    if not is_loopback_host(host) and not allow_unauthenticated:
        folder = shlex.quote(str(data_dir.resolve())) if data_dir else "DIR"  # only now: not on every request
        return (
            f"an API key is required: this server listens on {host} and has no API key yet; create one with "
            f"`fluxedit keys create NAME --data-dir {folder}` (the server's data folder)"
        )
    return None
