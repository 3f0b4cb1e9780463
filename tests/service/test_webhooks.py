"""Webhook signing and background delivery from the outbox, against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fluxedit.config import Settings
from fluxedit.service.fetch import UrlPolicy
from fluxedit.service.standard_webhooks import new_secret, signature, signature_headers
from fluxedit.service.webhook_schedule import RetrySchedule
from fluxedit.service.webhooks import WebhookSender, sign, verify
from fluxedit.store.database import open_database
from fluxedit.store.models import WebhookDelivery

OPEN = UrlPolicy(allow_private=True)
ONCE = RetrySchedule(base_s=0.05, max_delay_s=0.05, window_s=0)  # one try, no retry
QUICK = RetrySchedule(base_s=0.05, max_delay_s=0.05, window_s=30)
SECRET = "whsec_test"
PAYLOAD = {"exec_id": "p-1", "flow_id": None, "status": "succeeded", "output": ["https://x/1.png"], "error": ""}


@dataclass
class Received:
    header_names: list[str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    """Answers POSTs with the next status in `statuses` (the last one repeats) and records them."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    answered: int = 0  # requests answered so far (a delayed one only when `release` is set or its delay passed)
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
        self.answered += 1


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 refuses some of 16 connections made at once

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


@pytest.fixture
def sessions(tmp_path):
    return open_database(f"sqlite:///{tmp_path / 'outbox.db'}")


class Results:
    """Collects on_result calls (a delivery has ended) and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool, str]] = []

    def __call__(self, delivery_id: str, attempts: int, delivered: bool, last_error: str) -> None:
        self.calls.append((delivery_id, attempts, delivered, last_error))

    async def wait(self, count: int = 1, timeout_s: float = 10.0) -> list[tuple[str, int, bool, str]]:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} of {count} results arrived"
            await asyncio.sleep(0.01)
        return self.calls


async def deliver(sessions, url: str, secret: str | None, schedule=ONCE, policy: UrlPolicy = OPEN) -> Results:
    results = Results()
    sender = WebhookSender(sessions, policy, schedule, on_result=results)
    await sender.start()
    try:
        sender.enqueue("p-1", url, PAYLOAD, secret)
        await results.wait()
    finally:
        await sender.stop()
    return results


def stored(sessions) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(session.query(WebhookDelivery).order_by(WebhookDelivery.created_at))


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


def test_a_signed_delivery_reaches_the_receiver(sessions):
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(sessions, url, SECRET))
    [(delivery_id, *outcome)] = results.calls
    assert outcome == [1, True, ""] and delivery_id.startswith("msg_")
    [request] = receiver.requests
    assert {"Content-Type", "X-Webhook-Timestamp", "X-Webhook-Signature"} <= set(request.header_names)
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert verify(SECRET, request.headers["X-Webhook-Timestamp"], request.body, request.headers["X-Webhook-Signature"])
    [row] = stored(sessions)
    assert row.body.encode() == request.body and row.id == delivery_id  # the stored bytes, sent as they are
    assert row.delivered_at is not None and row.next_attempt_at is None
    assert row.secret is None  # not kept once it is no longer needed


def test_no_signature_without_a_secret(sessions):
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(sessions, url, None))
    assert [call[1:] for call in results.calls] == [(1, True, "")]
    names = {name.lower() for name in receiver.requests[0].header_names}
    assert "x-webhook-signature" not in names
    assert "x-webhook-timestamp" not in names
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


def test_retries_until_delivered(sessions):
    receiver = Receiver(statuses=[500, 500, 204])
    with serve(receiver) as url:
        results = asyncio.run(deliver(sessions, url, SECRET, schedule=QUICK))
    assert [call[1:] for call in results.calls] == [(3, True, "")]
    assert len(receiver.requests) == 3
    assert len({request.body for request in receiver.requests}) == 1  # the same bytes every try
    [row] = stored(sessions)
    assert [(t["status_code"], t["error"]) for t in row.tries] == [
        (500, "the receiver answered HTTP 500"), (500, "the receiver answered HTTP 500"), (204, None),
    ]  # fmt: skip


def test_gives_up_once_the_window_has_passed_with_a_last_try_at_its_end(sessions):
    receiver = Receiver(statuses=[503])
    window = RetrySchedule(base_s=0.05, max_delay_s=0.1, window_s=0.6)
    with serve(receiver) as url:
        started = time.monotonic()
        results = asyncio.run(deliver(sessions, url, SECRET, schedule=window))
    [(_, attempts, delivered, last_error)] = results.calls
    assert not delivered and last_error == "the receiver answered HTTP 503"
    assert attempts == len(receiver.requests) >= 3
    assert receiver.requests[-1].at - started >= 0.5  # it kept trying for the whole window
    [row] = stored(sessions)
    assert row.given_up_at is not None and row.next_attempt_at is None and row.attempts == attempts


def test_a_refused_address_is_not_retried(sessions):
    receiver = Receiver()
    with serve(receiver) as url:
        results = asyncio.run(deliver(sessions, url, SECRET, schedule=QUICK, policy=UrlPolicy()))
    [(_, attempts, delivered, last_error)] = results.calls
    assert (attempts, delivered) == (1, False)
    assert "loopback/private" in last_error
    assert receiver.requests == []


def test_each_try_is_signed_when_it_is_sent_with_the_same_message_id(sessions):
    receiver = Receiver(statuses=[500, 200])
    secret = new_secret()

    async def scenario() -> Results:
        results = Results()
        sender = WebhookSender(sessions, OPEN, RetrySchedule(base_s=1.1, max_delay_s=1.1, window_s=30, jitter=0),
                               on_result=results)  # fmt: skip
        sender.register_signer("replicate", signature_headers)
        await sender.start()
        try:
            sender.enqueue("p-1", url, PAYLOAD, secret, signer="replicate")
            await results.wait()
        finally:
            await sender.stop()
        return results

    with serve(receiver) as url:
        asyncio.run(scenario())
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])  # fresh each try
    for request in (first, second):
        expected = signature(secret, request.headers["webhook-id"], int(request.headers["webhook-timestamp"]),
                             request.body)  # fmt: skip
        assert request.headers["webhook-signature"] == expected


def test_enqueue_never_waits_for_a_slow_receiver_and_stop_keeps_what_is_pending(sessions):
    receiver = Receiver(delay_s=30.0)

    async def first_run() -> tuple[int, int, Results]:
        results = Results()
        sender = WebhookSender(sessions, OPEN, QUICK, on_result=results)
        await sender.start()
        for number in range(20):
            sender.enqueue(f"p-{number}", url, PAYLOAD, SECRET)
        enqueued = len(stored(sessions))  # stored and returned before any receiver answered (none can yet)
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 16 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the POSTs are under way, held by the receiver
        await asyncio.sleep(0.2)
        assert len(receiver.requests) == 16  # the concurrency bound: the other 4 wait in the outbox
        await sender.stop()
        return enqueued, receiver.answered, results

    async def second_run() -> Results:
        results = Results()
        sender = WebhookSender(sessions, OPEN, QUICK, on_result=results)
        await sender.start()
        try:
            await results.wait(20)
        finally:
            await sender.stop()
        return results

    with serve(receiver) as url:
        enqueued, answered_at_stop, results = asyncio.run(first_run())
        assert enqueued == 20
        assert answered_at_stop == 0  # stop cut the held tries short instead of waiting out the 30 s receivers
        assert results.calls == []  # nothing was given up: the next start sends them
        rows = stored(sessions)
        assert len(rows) == 20 and all(row.delivered_at is None and row.given_up_at is None for row in rows)
        interrupted = [row for row in rows if row.tries]
        assert len(interrupted) == 16  # the concurrency bound: the other 4 waited in the outbox
        assert all("interrupted" in row.tries[0]["error"] for row in interrupted)
        receiver.delay_s = 0.0
        receiver.release.set()
        results = asyncio.run(second_run())
    assert sorted(call[2] for call in results.calls) == [True] * 20
    assert sum(1 for request in receiver.requests if request.body) == 36  # 16 cut short, then all 20 again


def test_enqueue_from_another_thread(sessions):
    receiver = Receiver()

    async def scenario() -> Results:
        results = Results()
        sender = WebhookSender(sessions, OPEN, ONCE, on_result=results)
        await sender.start()
        try:
            await asyncio.to_thread(sender.enqueue, "from-thread", url, PAYLOAD, None)
            await results.wait()
        finally:
            await sender.stop()
        return results

    with serve(receiver) as url:
        results = asyncio.run(scenario())
    assert [call[1:] for call in results.calls] == [(1, True, "")]


def test_a_delivery_stored_before_start_is_sent_once_the_sender_starts(sessions):
    receiver = Receiver()

    async def scenario() -> Results:
        results = Results()
        sender = WebhookSender(sessions, OPEN, ONCE, on_result=results)
        delivery_id = sender.enqueue("p-1", url, PAYLOAD, SECRET)  # e.g. a server that stopped before sending
        await sender.start()
        try:
            await results.wait()
        finally:
            await sender.stop()
        assert results.calls[0][0] == delivery_id
        return results

    with serve(receiver) as url:
        asyncio.run(scenario())
    assert len(receiver.requests) == 1


def test_a_claim_left_by_a_killed_server_lapses_and_the_delivery_is_tried_again(sessions):
    receiver = Receiver()

    async def scenario() -> Results:
        results = Results()
        sender = WebhookSender(sessions, OPEN, ONCE, on_result=results)
        sender.enqueue("p-1", url, PAYLOAD, SECRET)
        from fluxedit.store.models import utcnow

        [claimed] = sender.outbox.claim_due(utcnow(), 10, lease_s=0.5, skip=set())  # then "killed" mid-try
        assert sender.outbox.claim_due(utcnow(), 10, lease_s=0.5, skip=set()) == []  # claimed once only
        await sender.start()
        try:
            await asyncio.sleep(0.2)
            assert receiver.requests == []  # still claimed
            await results.wait()
        finally:
            await sender.stop()
        assert results.calls[0][0] == claimed.id
        return results

    with serve(receiver) as url:
        asyncio.run(scenario())
    assert len(receiver.requests) == 1


def test_the_default_schedule_backs_off_with_jitter_for_an_hour():
    settings = Settings()
    schedule = RetrySchedule(settings.webhook_retry_base, settings.webhook_retry_max_delay,
                             settings.webhook_retry_window)  # fmt: skip
    assert schedule.window_s >= 600  # the promise: at least ten minutes of retries
    rng = random.Random(7)
    delays = [schedule.delay(failures, rng) for failures in range(1, 12)]
    for failures, delay in enumerate(delays, start=1):
        ceiling = min(schedule.max_delay_s, schedule.base_s * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d / min(schedule.max_delay_s, schedule.base_s * 2**i), 3) for i, d in enumerate(delays)}) > 1
    from datetime import UTC, datetime, timedelta

    created = now = datetime(2026, 1, 1, tzinfo=UTC)
    tries = 1
    while (following := schedule.next_attempt(created, now, tries, rng)) is not None:
        assert now < following <= created + timedelta(seconds=schedule.window_s)
        now, tries = following, tries + 1
    assert now == created + timedelta(seconds=schedule.window_s)  # the last try is at the end of the window
    assert 10 < tries < 40


def test_a_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="webhook_retry_base"):
        RetrySchedule(base_s=10, max_delay_s=5)
