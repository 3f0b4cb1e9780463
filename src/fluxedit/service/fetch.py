"""Fetching user-supplied URLs without letting them reach the server's own network (an SSRF guard).

Every hop is resolved here, every address DNS gives is checked, and the connection goes to a
checked address (the URL is rewritten to the IP; Host header and TLS name stay the original host),
so a second DNS answer cannot point somewhere else (DNS rebinding). Redirects are followed by hand
for the same reason. Which addresses are allowed is service/url_policy.py's; data URIs are service/data_uri.py's.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import BinaryIO

import anyio
import httpx

from ..schema import InputDownloadError, InputError
from .data_uri import megabytes
from .url_policy import IPAddress, UrlPolicy, address_allowed

INVALID_URL = "Invalid URL."
MAX_URL_CHARS = 8192
USER_AGENT = "fluxedit"

_BAD_URL_CHARS = re.compile(
    r"[\s\x00-\x1f\x7f\\]"
)  # no URL of ours needs them; backslashes parse differently per client
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")  # httpx gives the host lowercased and IDNA-encoded
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    final_url: str


def parse_http_url(url: str, field: str) -> httpx.URL:
    """An absolute http(s) URL with a plausible host and port, or InputError(field, "Invalid URL.")."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or _BAD_URL_CHARS.search(url):
        raise InputError(field, INVALID_URL)
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InputError(field, INVALID_URL) from None
    if parsed.scheme not in ("http", "https") or not _valid_host(host):
        raise InputError(field, INVALID_URL)
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InputError(field, INVALID_URL)
    return parsed


def _valid_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


async def fetch_bytes(url: str, policy: UrlPolicy, field: str) -> Fetched:
    """GET url under policy: address rules on every hop, size limit, one overall timeout."""
    current = parse_http_url(url, field)
    try:
        with anyio.fail_after(policy.timeout_s):
            return await _follow(current, policy, field)
    except (TimeoutError, httpx.TimeoutException):
        raise InputDownloadError(field, f"timed out after {policy.timeout_s:g} s") from None


async def fetch_to_file(url: str, policy: UrlPolicy, field: str, sink: BinaryIO) -> Fetched:
    """As fetch_bytes, but the body streams into `sink` (for files too large to hold, such as LoRAs)."""
    current = parse_http_url(url, field)
    try:
        with anyio.fail_after(policy.timeout_s):
            return await _follow(current, policy, field, sink)
    except (TimeoutError, httpx.TimeoutException):
        raise InputDownloadError(field, f"timed out after {policy.timeout_s:g} s") from None


async def _follow(current: httpx.URL, policy: UrlPolicy, field: str, sink: BinaryIO | None = None) -> Fetched:
    headers = {"Accept": "image/*, */*;q=0.5", "Accept-Encoding": "identity"}  # images are compressed already
    for _hop in range(policy.max_redirects + 1):
        addresses = await _checked_addresses(current, policy, field, "fetch")
        try:
            async with _new_client(policy.timeout_s) as client:
                response = await _send_pinned(client, "GET", current, addresses, headers)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        current = _redirect_target(current, location, field)
                        continue
                    if not 200 <= response.status_code < 300:
                        raise InputDownloadError(field, f"the server answered HTTP {response.status_code}")
                    data = await _read_limited(response, policy.max_bytes, field, sink)
                    return Fetched(data, response.headers.get("content-type"), str(current))
                finally:
                    await response.aclose()
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as error:
            raise InputDownloadError(field, _network_failure(error, current)) from None
    raise InputDownloadError(field, f"too many redirects (more than {policy.max_redirects})")


def _redirect_target(current: httpx.URL, location: str, field: str) -> httpx.URL:
    try:
        target = str(current.join(location))
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InputDownloadError(field, "the server redirected to an invalid URL") from None
    try:
        return parse_http_url(target, field)
    except InputError:
        shown = location if len(location) <= 200 else location[:200] + "..."
        raise InputError(field, f"redirects to {shown!r}, which is not an http(s) URL this server fetches") from None


async def _read_limited(response: httpx.Response, max_bytes: int, field: str, sink: BinaryIO | None = None) -> bytes:
    """The body, refused as soon as it is known (Content-Length) or seen (streamed) to pass max_bytes.

    With a sink, the body is written there instead and b"" is returned."""
    too_large = InputError(field, f"is larger than {megabytes(max_bytes)} MB")
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    body = bytearray()
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise too_large
        if sink is not None:
            sink.write(chunk)
        else:
            body += chunk
    return bytes(body)


async def post_checked(
    url: str, content: bytes, headers: dict[str, str], policy: UrlPolicy, timeout_s: float = 10.0
) -> int:
    """POST content to a webhook URL under the address rules, without following redirects; its HTTP status."""
    field = "webhook_url"
    target = parse_http_url(url, field)
    try:
        with anyio.fail_after(timeout_s):
            addresses = await _checked_addresses(target, policy, field, "send webhooks to")
            async with _new_client(timeout_s) as client:
                response = await _send_pinned(client, "POST", target, addresses, headers, content)
                await response.aclose()  # the receiver's answer body is of no use to us
                return response.status_code
    except (TimeoutError, httpx.TimeoutException):
        raise InputDownloadError(field, f"timed out after {timeout_s:g} s") from None
    except httpx.HTTPError as error:
        raise InputDownloadError(field, _network_failure(error, target)) from None


async def _checked_addresses(url: httpx.URL, policy: UrlPolicy, field: str, verb: str) -> list[IPAddress]:
    """Every address the host resolves to, or InputError if any of them is off limits."""
    host = url.raw_host.decode("ascii")
    addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80), field)
    for ip in addresses:
        if not address_allowed(ip, policy):
            where = str(ip) if host == str(ip) else f"{host} ({ip})"
            raise InputError(
                field,
                f"points to {where}, a loopback/private address this server does not {verb} "
                "(an operator can allow it with --allow-private-urls)",
            )
    return addresses


async def _resolve(host: str, port: int, field: str) -> list[IPAddress]:
    """The host's addresses in DNS order; a literal address is its own answer."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        # Bytes skip anyio's IDNA step: httpx has already encoded the name.
        answers = await anyio.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InputDownloadError(field, f"could not resolve the host {host}") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise InputDownloadError(field, f"could not resolve the host {host}")
    return addresses


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # built once: loading the CA bundle per request is slow


def _new_client(timeout_s: float) -> httpx.AsyncClient:
    # One client per hop, so a pooled TLS connection checked for one name never serves another.
    # trust_env=False: an environment proxy would connect by name and undo the address pinning.
    return httpx.AsyncClient(timeout=timeout_s, trust_env=False, follow_redirects=False, verify=_ssl_context())


async def _send_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    addresses: list[IPAddress],
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """Send to the first checked address that accepts a connection, keeping Host and the TLS name."""
    all_headers = {"User-Agent": USER_AGENT, **headers, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    for index, ip in enumerate(addresses):
        pinned = url.copy_with(host=str(ip))
        request = client.build_request(method, pinned, headers=all_headers, content=content, extensions=extensions)
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError:
            if index == len(addresses) - 1:
                raise
    raise AssertionError("unreachable: _checked_addresses never returns an empty list")


def _network_failure(error: httpx.HTTPError, url: httpx.URL) -> str:
    host = url.host
    cause = _root_cause(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {host} is not valid ({cause.verify_message})"
    if isinstance(error, httpx.ConnectError):
        return f"could not connect to {host} ({_describe(cause)})"
    return f"the connection to {host} failed ({_describe(cause)})"


def _root_cause(error: BaseException) -> BaseException:
    """httpx wraps httpcore's error, which wraps the OSError; the innermost one says what happened."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()  # "connection refused", not asyncio's "Connect call failed (...)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
