"""Webhooks as the seed platform sends them: signed JSON POSTs, kept in the outbox and retried in the background.

The signature is HMAC-SHA256 over "<timestamp>.<raw body>", so a receiver can check both that we
sent it and that it is fresh. Delivery never runs on the caller's time: enqueue() only stores it.
Each try is signed as it is sent, so a retry an hour later still carries a fresh timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from ..schema import InputDownloadError, InputError
from ..store.models import utcnow
from .fetch import UrlPolicy, post_checked
from .webhook_outbox import Claimed, Ended, WebhookOutbox
from .webhook_schedule import RetrySchedule

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
POLL_S = 5.0  # look for due deliveries at least this often (another server sharing the database adds some)
LEASE_SLACK_S = 30.0  # a claimed try lapses this long after its timeout: a server killed mid-try loses nothing
STOP_GRACE_S = 2.0  # at stop, tries under way may finish this long; the rest are logged as interrupted

# Called when a delivery ends: (delivery_id, attempts, delivered, last_error).
ResultCallback = Callable[[str, int, bool, str], None]
# Another dialect's signature: (secret, delivery_id, timestamp, body) -> the headers to add to the POST.
HeaderSigner = Callable[[str, str, int, bytes], dict[str, str]]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Webhook-Signature value: "sha256=" and the hex HMAC of "<timestamp>.<body>"."""
    return "sha256=" + _mac(secret, str(timestamp), body)


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """Whether signature is ours for this body and timestamp, and the timestamp is within tolerance_s of now."""
    timestamp = timestamp.strip()
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False  # a replayed old request, even if correctly signed
    expected = "sha256=" + _mac(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def _mac(secret: str, timestamp: str, body: bytes) -> str:
    # The timestamp text as sent, not re-formatted: the sender signed those exact bytes.
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Stores deliveries in the outbox and sends them from a task on the event loop that called start().

    One pump claims due deliveries, at most `max_concurrent` tries at a time, each in its own task, so
    a slow or dead receiver never holds up the others or the queue; after a restart it resumes them.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: UrlPolicy,
        schedule: RetrySchedule | None = None,
        on_result: ResultCallback | None = None,
        max_concurrent: int = 16,
        *,
        timeout_s: float = 10.0,
    ):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.outbox = WebhookOutbox(sessions)
        self.schedule = schedule or RetrySchedule()
        self._policy = policy
        self._on_result = on_result
        self._max_concurrent = max_concurrent
        self._timeout_s = timeout_s
        self._signers: dict[str, HeaderSigner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tries: dict[str, asyncio.Task[None]] = {}  # delivery id -> its try under way
        self._stopping = False

    def register_signer(self, name: str, signer: HeaderSigner) -> None:
        """A dialect's signature, named as its deliveries name it (they outlive this process)."""
        self._signers[name] = signer

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._pump_task = self._loop.create_task(self._pump())

    async def stop(self) -> None:
        """Stop sending; tries under way get a moment to finish. Whatever is pending stays for the next start."""
        self._stopping = True  # besides the cancel: wait_for can swallow one that comes as the wake-up does
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
            self._pump_task = None
        tries = list(self._tries.values())
        if tries:
            await asyncio.wait(tries, timeout=STOP_GRACE_S)
            for task in tries:
                task.cancel()
            await asyncio.gather(*tries, return_exceptions=True)
        self._loop = None

    def enqueue(
        self,
        prediction_id: str,
        url: str,
        payload: dict,
        secret: str | None,
        *,
        signer: str | None = None,
        prediction_status: str = "",
        session: Session | None = None,
    ) -> str:
        """Store a delivery and return its id at once; safe to call from the loop or from another thread.

        With `signer` (a registered name), that dialect signs each try instead of the X-Webhook-Signature scheme."""
        body = json.dumps(payload, separators=(",", ":"))  # these exact bytes are signed and sent, every try
        delivery_id = self.outbox.add(prediction_id, url, body, secret, signer, prediction_status, session)
        self._poke()
        return delivery_id

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return  # not started: the pump finds it when it starts
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the next start sends it
            loop.call_soon_threadsafe(wake.set)

    async def _pump(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            try:
                wait_s = self._launch_due()
            except Exception:  # a database hiccup must not end the sending for good
                log.exception("webhook outbox: could not read the due deliveries; trying again shortly")
                wait_s = POLL_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    def _launch_due(self) -> float:
        """Start a try for each due delivery there is room for; the seconds until the pump should look again."""
        assert self._loop is not None
        now = utcnow()
        lease_s = self._timeout_s + LEASE_SLACK_S
        for delivery in self.outbox.claim_due(now, self._max_concurrent - len(self._tries), lease_s, set(self._tries)):
            task = self._loop.create_task(self._try(delivery))
            self._tries[delivery.id] = task
            task.add_done_callback(lambda _, key=delivery.id: self._tries.pop(key, None))
        if len(self._tries) >= self._max_concurrent:
            return POLL_S  # a try that ends wakes the pump
        upcoming = self.outbox.next_due(now, set(self._tries))
        if upcoming is None:
            return POLL_S
        return min(POLL_S, max(0.05, (upcoming - utcnow()).total_seconds()))

    async def _try(self, delivery: Claimed) -> None:
        tried_at, started = utcnow(), time.monotonic()
        try:
            try:
                status, error, retry = await self._post(delivery)
            except asyncio.CancelledError:
                self.outbox.interrupted(delivery.id, tried_at, time.monotonic() - started)
                raise
            ended = self._record(delivery, tried_at, time.monotonic() - started, status, error, retry)
        finally:
            self._tries.pop(delivery.id, None)  # now, not in a done callback: the pump may look before those run
            if self._wake is not None:
                self._wake.set()  # room for another try, or a new due time
        if ended is not None:
            self._report(ended.id, ended.attempts, ended.delivered, ended.last_error)

    def _record(self, delivery: Claimed, tried_at, seconds: float, status, error, retry: bool) -> Ended | None:
        try:
            return self.outbox.record(delivery.id, tried_at, seconds, status, error, retry, self.schedule)
        except Exception:  # the claim lapses and the try is made again: at least once, never lost
            log.exception("webhook %s: could not record its try", delivery.id)
            return None

    async def _post(self, delivery: Claimed) -> tuple[int | None, str | None, bool]:
        """One POST: (HTTP status, error or None when delivered, worth retrying)."""
        headers = {"Content-Type": "application/json"}
        if delivery.secret:
            timestamp = int(time.time())  # taken per try, so a late retry is still fresh for the receiver
            if delivery.signer is None:
                headers[TIMESTAMP_HEADER] = str(timestamp)
                headers[SIGNATURE_HEADER] = sign(delivery.secret, timestamp, delivery.body)
            elif (signer := self._signers.get(delivery.signer)) is not None:
                headers.update(signer(delivery.secret, delivery.id, timestamp, delivery.body))
            else:
                return None, f"this server has no webhook signer {delivery.signer!r}", False
        try:
            status = await post_checked(delivery.url, delivery.body, headers, self._policy, self._timeout_s)
        except InputDownloadError as error:
            return None, error.problem, True
        except InputError as error:
            return None, error.problem, False  # a refused or invalid URL stays refused
        except Exception as error:  # a bug here must not kill the delivery silently
            log.exception("webhook POST to %s failed unexpectedly", delivery.url)
            return None, f"unexpected error: {error!r}", True
        if 200 <= status < 300:
            return status, None, False
        return status, f"the receiver answered HTTP {status}", True

    def _report(self, delivery_id: str, attempts: int, delivered: bool, last_error: str) -> None:
        if delivered:
            log.info("webhook %s delivered after %d attempt(s)", delivery_id, attempts)
        else:
            log.warning("webhook %s given up after %d attempt(s): %s", delivery_id, attempts, last_error)
        if self._on_result is None:
            return
        try:
            self._on_result(delivery_id, attempts, delivered, last_error)
        except Exception:
            log.exception("webhook result callback failed for %s", delivery_id)
