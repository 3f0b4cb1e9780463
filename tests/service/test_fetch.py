"""The SSRF guard and data URIs, against real HTTP servers on loopback addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fluxedit.schema import InputDownloadError, InputError
from fluxedit.service import fetch
from fluxedit.service.data_uri import parse_data_uri
from fluxedit.service.fetch import (
    UrlPolicy,
    address_allowed,
    fetch_bytes,
    parse_http_url,
    post_checked,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # the bytes only travel, nobody decodes them
MB = 1024 * 1024
OPEN = UrlPolicy(allow_private=True)
REFUSED = "a loopback/private address this server does not fetch (an operator can allow it with --allow-private-urls)"

Handler = Callable[[BaseHTTPRequestHandler], None]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up early (the size limit) are expected here


@contextmanager
def serve(handle: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Run handle for every request on a real server; yields its base URL."""

    class RequestHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handle(self)

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    server = _QuietServer((host, 0), RequestHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)  # quick shutdown()
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply(request: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    request.send_response(status)
    for name, value in {"Content-Type": "image/png", "Content-Length": str(len(body)), **headers}.items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def run(coroutine):
    return asyncio.run(coroutine)


def fetch_error(url: str, policy: UrlPolicy = OPEN, field: str = "image_url") -> InputError:
    with pytest.raises(InputError) as caught:
        run(fetch_bytes(url, policy, field))
    return caught.value


def free_port() -> int:
    with _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        return probe.server_address[1]


def test_a_served_png_is_fetched():
    with serve(lambda request: reply(request, 200, PNG)) as base:
        fetched = run(fetch_bytes(f"{base}/cat.png", OPEN, "image_url"))
    assert fetched.data == PNG
    assert fetched.content_type == "image/png"
    assert fetched.final_url == f"{base}/cat.png"


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "",
        "http://",
        "https:///path",
        "ftp://x/y",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://exa mple.com/a.png",
        " http://example.com/a.png",
        "http://example.com:99999/a.png",
        "http://example.com:0/a.png",
        "http://example.com:port/a.png",
        "http://example.com\\@127.0.0.1/",
        "//example.com/a.png",
        "http://[::1/a.png",
    ],
)
def test_malformed_urls_are_invalid(url):
    with pytest.raises(InputError) as caught:
        parse_http_url(url, "image_url")
    assert str(caught.value) == "image_url: Invalid URL."
    assert str(fetch_error(url)) == "image_url: Invalid URL."


def test_well_formed_urls_parse():
    assert parse_http_url("HTTPS://Example.COM:8443/a.png?x=1", "f").host == "example.com"
    assert parse_http_url("http://[::1]:8080/a.png", "f").host == "::1"
    assert parse_http_url("http://bücher.example/a.png", "f").raw_host == b"xn--bcher-kva.example"


def test_loopback_is_refused_by_default():
    with serve(lambda request: reply(request, 200, PNG)) as base:
        error = fetch_error(f"{base}/cat.png", UrlPolicy())
    assert type(error) is InputError
    assert str(error) == f"image_url: points to 127.0.0.1, {REFUSED}"


def test_a_name_resolving_to_loopback_is_refused():
    with serve(lambda request: reply(request, 200, PNG)) as base:
        port = base.rsplit(":", 1)[1]
        error = fetch_error(f"http://localhost:{port}/cat.png", UrlPolicy())
    assert type(error) is InputError
    assert error.problem.startswith("points to localhost (")
    assert REFUSED in error.problem


def test_every_dns_answer_is_checked(monkeypatch):
    async def resolve(host, port, field):
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    error = fetch_error("http://mixed.test/cat.png", UrlPolicy())
    assert "points to mixed.test (127.0.0.1)" in error.problem


def test_the_connection_goes_to_the_checked_address(monkeypatch):
    """A name no real DNS knows still works: the request went to the pinned IP, with the name as Host."""
    seen_hosts = []

    def handle(request):
        seen_hosts.append(request.headers["Host"])
        reply(request, 200, PNG)

    calls = []

    async def resolve(host, port, field):
        calls.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    with serve(handle) as base:
        port = base.rsplit(":", 1)[1]
        fetched = run(fetch_bytes(f"http://pinned.test:{port}/cat.png", OPEN, "image_url"))
    assert fetched.data == PNG
    assert seen_hosts == [f"pinned.test:{port}"]
    assert calls == ["pinned.test"]  # resolved once, by us, not again by the HTTP client


def test_a_redirect_to_loopback_is_refused():
    with serve(lambda request: reply(request, 200, PNG)) as target:

        def redirect(request):
            reply(request, 302, b"", Location=f"{target}/secret.png")

        with serve(redirect, host="127.0.0.2") as allowed:
            policy = UrlPolicy(allowed_networks=("127.0.0.2/32",))
            error = fetch_error(f"{allowed}/start.png", policy)
    assert type(error) is InputError
    assert str(error) == f"image_url: points to 127.0.0.1, {REFUSED}"


def test_an_allowed_network_is_fetched():
    with serve(lambda request: reply(request, 200, PNG), host="127.0.0.2") as base:
        fetched = run(fetch_bytes(f"{base}/cat.png", UrlPolicy(allowed_networks=("127.0.0.2/32",)), "image_url"))
    assert fetched.data == PNG


def _redirect_chain(request):
    step = int(request.path.rsplit("/", 1)[1])
    if step < 6:
        reply(request, 302, b"", Location=f"/hop/{step + 1}")
    else:
        reply(request, 200, PNG)


def test_five_redirects_are_followed():
    with serve(_redirect_chain) as base:
        fetched = run(fetch_bytes(f"{base}/hop/1", OPEN, "image_url"))
    assert fetched.data == PNG
    assert fetched.final_url == f"{base}/hop/6"


def test_six_redirects_are_too_many():
    with serve(_redirect_chain) as base:
        error = fetch_error(f"{base}/hop/0")
    assert isinstance(error, InputDownloadError)
    assert str(error) == "image_url: too many redirects (more than 5)"


def test_a_redirect_to_another_scheme_is_refused():
    with serve(lambda request: reply(request, 301, b"", Location="file:///etc/passwd")) as base:
        error = fetch_error(f"{base}/cat.png")
    assert "file:///etc/passwd" in error.problem


def _stream_51_mb(with_length: bool) -> Handler:
    def handle(request):
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        if with_length:
            request.send_header("Content-Length", str(51 * MB))
        request.end_headers()  # without a length the body ends when the connection closes (HTTP/1.0)
        chunk = bytes(MB)
        for _ in range(51):
            request.wfile.write(chunk)

    return handle


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "streamed"])
def test_a_body_over_the_limit_is_refused(with_length):
    with serve(_stream_51_mb(with_length)) as base:
        error = fetch_error(f"{base}/huge.png")
    assert type(error) is InputError
    assert str(error) == "image_url: is larger than 50 MB"


def test_an_http_error_is_a_download_error():
    with serve(lambda request: reply(request, 404, b"gone")) as base:
        error = fetch_error(f"{base}/missing.png")
    assert isinstance(error, InputDownloadError)
    assert str(error) == "image_url: the server answered HTTP 404"


def test_a_slow_server_times_out():
    release = threading.Event()

    def handle(request):
        release.wait(5)
        reply(request, 200, PNG)

    with serve(handle) as base:
        try:
            error = fetch_error(f"{base}/slow.png", UrlPolicy(allow_private=True, timeout_s=0.3))
        finally:
            release.set()
    assert isinstance(error, InputDownloadError)
    assert str(error) == "image_url: timed out after 0.3 s"


def test_a_refused_connection_is_a_download_error():
    error = fetch_error(f"http://127.0.0.1:{free_port()}/cat.png")
    assert isinstance(error, InputDownloadError)
    assert error.problem.startswith("could not connect to 127.0.0.1 (")


def test_an_unknown_host_is_a_download_error():
    error = fetch_error("http://nowhere.invalid/cat.png")
    assert isinstance(error, InputDownloadError)
    assert str(error) == "image_url: could not resolve the host nowhere.invalid"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
    ],
)
def test_private_addresses_are_refused(address):
    ip = ipaddress.ip_address(address)
    assert not address_allowed(ip, UrlPolicy())
    assert address_allowed(ip, UrlPolicy(allow_private=True))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(ipaddress.ip_address(address), UrlPolicy())


def test_allowed_networks_let_in_only_their_addresses():
    policy = UrlPolicy(allowed_networks=("127.0.0.2/32", "fd00::/8"))
    assert address_allowed(ipaddress.ip_address("127.0.0.2"), policy)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.2"), policy)
    assert address_allowed(ipaddress.ip_address("fd00::5"), policy)
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"), policy)


def test_a_bad_allowed_network_fails_at_startup():
    with pytest.raises(ValueError, match="allowed_networks"):
        UrlPolicy(allowed_networks=("10.0.0.0/33",))


def test_data_uris():
    assert parse_data_uri("data:image/png;base64,iVBORw0KGgo=", "image", MB) == b"\x89PNG\r\n\x1a\n"
    assert parse_data_uri("data:image/png;base64,iVBORw0KGgo", "image", MB) == b"\x89PNG\r\n\x1a\n"
    assert parse_data_uri("DATA:image/png;BASE64,iVBO\nRw0K Ggo%3D", "image", MB) == b"\x89PNG\r\n\x1a\n"
    assert parse_data_uri("data:,hello%20world", "image", MB) == b"hello world"
    assert parse_data_uri("data:text/plain;charset=utf-8;base64,aGk=", "image", MB) == b"hi"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://example.com/a.png", "is not a data URI (expected data:[<mime type>][;base64],<data>)"),
        ("data:image/png;base64", "is not a valid data URI: a comma must come before the data"),
        ("data:image/png;base64,!!!!", "is not valid base64 data"),
        ("data:image/png;base64,abcde", "is not valid base64 data"),
        ("data:image/png;base64,", "is an empty data URI"),
    ],
)
def test_bad_data_uris(uri, problem):
    with pytest.raises(InputError) as caught:
        parse_data_uri(uri, "image", MB)
    assert str(caught.value) == f"image: {problem}"


def test_a_data_uri_over_the_limit_is_refused():
    big = "data:image/png;base64," + "A" * (4 * MB // 3 + 8)
    with pytest.raises(InputError) as caught:
        parse_data_uri(big, "image", MB)
    assert str(caught.value) == "image: is larger than 1 MB"
    with pytest.raises(InputError, match="is larger than 1 MB"):
        parse_data_uri("data:," + "a" * (MB + 1), "image", MB)


def test_post_checked_returns_the_receivers_status():
    received = []

    def handle(request):
        received.append((request.command, request.rfile.read(int(request.headers["Content-Length"]))))
        reply(request, 202)

    with serve(handle) as base:
        status = run(post_checked(f"{base}/hook", b'{"a":1}', {"Content-Type": "application/json"}, OPEN))
    assert status == 202
    assert received == [("POST", b'{"a":1}')]


def test_post_checked_does_not_follow_redirects():
    with serve(lambda request: reply(request, 307, b"", Location="/elsewhere")) as base:
        assert run(post_checked(f"{base}/hook", b"{}", {}, OPEN)) == 307


def test_post_checked_refuses_private_addresses():
    with serve(lambda request: reply(request, 200)) as base, pytest.raises(InputError) as caught:
        run(post_checked(f"{base}/hook", b"{}", {}, UrlPolicy()))
    assert type(caught.value) is InputError
    assert caught.value.field == "webhook_url"
    assert "does not send webhooks to" in caught.value.problem


def test_post_checked_reports_a_dead_receiver():
    with pytest.raises(InputDownloadError) as caught:
        run(post_checked(f"http://127.0.0.1:{free_port()}/hook", b"{}", {}, OPEN))
    assert caught.value.field == "webhook_url"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for fluxedit.test, made with the openssl tool."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fluxedit.test"]
    names = ["-addext", "subjectAltName=DNS:fluxedit.test"]
    subprocess.run([*request, *names, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


@pytest.fixture
def tls_server(certificate, monkeypatch):
    """An https server on 127.0.0.1 that the fetcher trusts and reaches under any name."""
    key, cert = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))

    async def resolve(host, port, field):
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    monkeypatch.setattr(fetch, "_ssl_context", lambda: client_side)
    with serve(lambda request: reply(request, 200, PNG), tls=server_side) as base:
        yield int(base.rsplit(":", 1)[1])


def test_https_to_a_pinned_address_checks_the_certificate_name(tls_server):
    fetched = run(fetch_bytes(f"https://fluxedit.test:{tls_server}/cat.png", OPEN, "image_url"))
    assert fetched.data == PNG
    error = fetch_error(f"https://other.test:{tls_server}/cat.png")
    assert isinstance(error, InputDownloadError)
    assert error.problem.startswith("the TLS certificate of other.test is not valid")
