"""Webhooks as the seed platform sends them: signed JSON POSTs, retried in the background.

The signature is HMAC-SHA256 over "<timestamp>.<raw body>", so a receiver can check both that we
sent it and that it is fresh. Delivery never runs on the caller's time: send() only schedules it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence

from ..schema import InputDownloadError, InputError
from .fetch import UrlPolicy, post_checked

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
# Seconds to wait before each try: 650 s of waiting, so a receiver gets over ten minutes to come back.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0, 5, 15, 30, 60, 120, 180, 240)

ResultCallback = Callable[[str, int, bool, str], None]  # (delivery_id, attempts, delivered, last_error)
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
    """Delivers webhooks in background tasks on the event loop that called start()."""

    def __init__(
        self,
        policy: UrlPolicy,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        on_result: ResultCallback | None = None,
        max_concurrent: int = 16,
        *,
        timeout_s: float = 10.0,
    ):
        if not retry_delays:
            raise ValueError("retry_delays needs at least one entry (the first try)")
        self._policy = policy
        self._delays = tuple(retry_delays)
        self._on_result = on_result
        self._max_concurrent = max_concurrent
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(self._max_concurrent)
        self._stopped = False

    async def stop(self) -> None:
        """Cancel every pending delivery (each is reported as not delivered) and wait for them to unwind."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def send(
        self, url: str, payload: dict, secret: str | None, delivery_id: str, signer: HeaderSigner | None = None
    ) -> None:
        """Schedule a delivery and return at once; safe to call from the loop or from another thread.

        With `signer`, that function signs each try instead of the X-Webhook-Signature scheme."""
        if self._loop is None:
            raise RuntimeError("WebhookSender.send() called before start()")
        body = json.dumps(payload, separators=(",", ":")).encode()  # these exact bytes are signed and sent
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._spawn(url, body, secret, delivery_id, signer)
            return
        try:
            self._loop.call_soon_threadsafe(self._spawn, url, body, secret, delivery_id, signer)
        except RuntimeError:  # the loop is closed: the service is shutting down
            self._report(delivery_id, 0, False, "the server stopped before delivery")

    def _spawn(
        self, url: str, body: bytes, secret: str | None, delivery_id: str, signer: HeaderSigner | None = None
    ) -> None:
        if self._stopped or self._loop is None:
            self._report(delivery_id, 0, False, "the server stopped before delivery")
            return
        task = self._loop.create_task(self._deliver(url, body, secret, delivery_id, signer))
        self._tasks.add(task)  # a reference, so the task is not garbage-collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, url: str, body: bytes, secret: str | None, delivery_id: str, signer: HeaderSigner | None = None
    ) -> None:
        attempts, delivered, last_error = 0, False, ""
        try:
            for delay in self._delays:
                if delay > 0:
                    await asyncio.sleep(delay)
                attempts += 1
                delivered, last_error, retry = await self._attempt(url, body, secret, delivery_id, signer)
                if delivered or not retry:
                    break
        except asyncio.CancelledError:
            last_error = "the server stopped before delivery" + (f" (last error: {last_error})" if last_error else "")
            raise
        finally:
            self._report(delivery_id, attempts, delivered, last_error)

    async def _attempt(
        self, url: str, body: bytes, secret: str | None, delivery_id: str = "", signer: HeaderSigner | None = None
    ) -> tuple[bool, str, bool]:
        """One POST: (delivered, error, worth retrying)."""
        assert self._semaphore is not None
        async with self._semaphore:
            headers = {"Content-Type": "application/json"}
            if secret:
                timestamp = int(time.time())  # taken per try, so a late retry is still fresh for the receiver
                if signer is not None:
                    headers.update(signer(secret, delivery_id, timestamp, body))
                else:
                    headers[TIMESTAMP_HEADER] = str(timestamp)
                    headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
            try:
                status = await post_checked(url, body, headers, self._policy, self._timeout_s)
            except InputDownloadError as error:
                return False, error.problem, True
            except InputError as error:
                return False, error.problem, False  # a refused or invalid URL stays refused
            except Exception as error:  # a bug here must not kill the delivery task silently
                log.exception("webhook POST to %s failed unexpectedly", url)
                return False, f"unexpected error: {error!r}", True
        if 200 <= status < 300:
            return True, "", False
        return False, f"the receiver answered HTTP {status}", True

    def _report(self, delivery_id: str, attempts: int, delivered: bool, last_error: str) -> None:
        if delivered:
            log.info("webhook %s delivered after %d attempt(s)", delivery_id, attempts)
        else:
            log.warning("webhook %s not delivered after %d attempt(s): %s", delivery_id, attempts, last_error)
        if self._on_result is None:
            return
        try:
            self._on_result(delivery_id, attempts, delivered, last_error)
        except Exception:
            log.exception("webhook result callback failed for %s", delivery_id)
