"""Webhook signing and background delivery, against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fluxedit.service.fetch import UrlPolicy
from fluxedit.service.webhooks import DEFAULT_RETRY_DELAYS, WebhookSender, sign, verify

OPEN = UrlPolicy(allow_private=True)
SECRET = "whsec_test"
PAYLOAD = {"exec_id": "p-1", "flow_id": None, "status": "succeeded", "output": ["https://x/1.png"], "error": ""}


@dataclass
class Received:
    header_names: list[str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers POSTs with the next status in `statuses` (the last one repeats) and records them."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        self.requests.append(Received(list(request.headers.keys()), dict(request.headers.items()), body))
        if self.delay_s:
            self.release.wait(self.delay_s)
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # the sender hangs up on slow receivers at stop()


@contextmanager
def serve(receiver: Receiver) -> Iterator[str]:
    class RequestHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.answer(self)

        def log_message(self, *args) -> None:
            pass

    server = _QuietServer(("127.0.0.1", 0), RequestHandler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


class Results:
    """Collects on_result calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool, str]] = []

    def __call__(self, delivery_id: str, attempts: int, delivered: bool, last_error: str) -> None:
        self.calls.append((delivery_id, attempts, delivered, last_error))

    async def wait(self, count: int = 1, timeout_s: float = 5.0) -> list[tuple[str, int, bool, str]]:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} of {count} results arrived"
            await asyncio.sleep(0.01)
        return self.calls


async def deliver(url: str, secret: str | None, delays=(0,), policy: UrlPolicy = OPEN) -> Results:
    results = Results()
    sender = WebhookSender(policy, retry_delays=delays, on_result=results)
    await sender.start()
    try:
        sender.send(url, PAYLOAD, secret, "d-1")
        await results.wait()
    finally:
        await sender.stop()
    return results


def test_sign_and_verify():
    body = b'{"a":1}'
    signature = sign(SECRET, 1_700_000_000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert signature == signature.lower()
    assert verify(SECRET, "1700000000", body, signature, now=1_700_000_100)
    assert not verify(SECRET, "1700000000", body + b" ", signature, now=1_700_000_100)
    assert not verify("other", "1700000000", body, signature, now=1_700_000_100)
    assert not verify(SECRET, "1700000001", body, signature, now=1_700_000_100)
    assert not verify(SECRET, "1700000000", body, signature, now=1_700_000_301)  # stale
    assert not verify(SECRET, "not-a-time", body, signature)
    assert not verify(SECRET, "1700000000", body, "sha256=é", now=1_700_000_000)


def test_a_signed_delivery_reaches_the_receiver():
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(url, SECRET))
    assert results.calls == [("d-1", 1, True, "")]
    [request] = receiver.requests
    assert {"Content-Type", "X-Webhook-Timestamp", "X-Webhook-Signature"} <= set(request.header_names)
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert verify(SECRET, request.headers["X-Webhook-Timestamp"], request.body, request.headers["X-Webhook-Signature"])
    assert json.loads(request.body) == PAYLOAD


def test_no_signature_without_a_secret():
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(url, None))
    assert results.calls == [("d-1", 1, True, "")]
    names = {name.lower() for name in receiver.requests[0].header_names}
    assert "x-webhook-signature" not in names
    assert "x-webhook-timestamp" not in names
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


def test_retries_until_delivered():
    receiver = Receiver(statuses=[500, 500, 204])
    with serve(receiver) as url:
        results = asyncio.run(deliver(url, SECRET, delays=(0, 0.05, 0.05)))
    assert results.calls == [("d-1", 3, True, "")]
    assert len(receiver.requests) == 3
    assert len({request.body for request in receiver.requests}) == 1  # the same bytes every try


def test_gives_up_after_the_schedule():
    receiver = Receiver(statuses=[503])
    with serve(receiver) as url:
        results = asyncio.run(deliver(url, SECRET, delays=(0, 0.05, 0.05)))
    assert results.calls == [("d-1", 3, False, "the receiver answered HTTP 503")]
    assert len(receiver.requests) == 3


def test_a_refused_address_is_not_retried():
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(url, SECRET, delays=(0, 0.05, 0.05), policy=UrlPolicy()))
    [(delivery_id, attempts, delivered, last_error)] = results.calls
    assert (delivery_id, attempts, delivered) == ("d-1", 1, False)
    assert "loopback/private" in last_error
    assert receiver.requests == []


def test_send_never_waits_for_a_slow_receiver():
    receiver = Receiver(delay_s=5.0)

    async def scenario() -> tuple[float, float, Results]:
        results = Results()
        sender = WebhookSender(OPEN, retry_delays=(0,), on_result=results)
        await sender.start()
        started = time.perf_counter()
        for number in range(20):
            sender.send(url, PAYLOAD, SECRET, f"d-{number}")
        sent = time.perf_counter() - started
        await asyncio.sleep(0.1)  # the POSTs are under way, held by the receiver
        started = time.perf_counter()
        await sender.stop()
        return sent, time.perf_counter() - started, results

    with serve(receiver) as url:
        sent_s, stop_s, results = asyncio.run(scenario())
    assert sent_s < 0.05
    assert stop_s < 1.0
    assert len(results.calls) == 20  # each pending delivery is reported once
    assert all(not delivered and "stopped" in error for _, _, delivered, error in results.calls)


def test_send_from_another_thread():
    receiver = Receiver()

    async def scenario() -> Results:
        results = Results()
        sender = WebhookSender(OPEN, retry_delays=(0,), on_result=results)
        await sender.start()
        try:
            await asyncio.to_thread(sender.send, url, PAYLOAD, None, "from-thread")
            await results.wait()
        finally:
            await sender.stop()
        return results

    with serve(receiver) as url:
        results = asyncio.run(scenario())
    assert results.calls == [("from-thread", 1, True, "")]


def test_send_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError, match="before start"):
        WebhookSender(OPEN).send("http://127.0.0.1/hook", PAYLOAD, None, "d-1")


def test_the_default_schedule_retries_for_ten_minutes():
    assert DEFAULT_RETRY_DELAYS[0] == 0
    assert sum(DEFAULT_RETRY_DELAYS) >= 600
