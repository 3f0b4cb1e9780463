"""Which addresses the server may connect to for a user-supplied URL: public unicast, or what the operator lets in.

Judged on every address DNS gives for every hop (service/fetch.py), so a loopback or private address is
never reached unless allowed.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the low 32 bits are an IPv4 address a NAT64 gateway reaches


@dataclass(frozen=True)
class UrlPolicy:
    allow_private: bool = False  # operator flag --allow-private-urls: every address allowed
    allowed_networks: tuple[str, ...] = ()  # CIDRs allowed even if private/loopback, e.g. ("127.0.0.2/32",)
    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 20.0
    max_redirects: int = 5

    def __post_init__(self) -> None:
        _networks(self.allowed_networks)  # a typo in the operator's config fails at startup, not per request


def address_allowed(ip: IPAddress, policy: UrlPolicy) -> bool:
    """Whether the server may connect to ip: public unicast, or let in by the operator."""
    if policy.allow_private:
        return True
    if any(ip in network for network in _networks(policy.allowed_networks)):
        return True
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        # ::ffff:127.0.0.1 and friends reach the IPv4 address, so that is what gets judged.
        return address_allowed(embedded, policy)
    blocked = (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global
        or ip in _CGNAT
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )
    return not blocked


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@functools.cache
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
    except ValueError as error:
        raise ValueError(f"allowed_networks: {error}") from None
