"""Events between API replicas on one PostgreSQL: LISTEN/NOTIFY, so no other server is needed.

Three channels, each a JSON payload naming the replica that sent it (a replica ignores its own):
- `fluxedit_events`: what a replica's EventHub published (status changes, the end, progress), so long-polls
  and SSE streams on every replica see every prediction and training. Progress is coalesced, the latest step
  of each at most every PROGRESS_EVERY_S (NOTIFY takes a global lock at commit: not one per step); a preview
  too large for a notification (8000 bytes) is left out of it.
- `fluxedit_wake`: a follower took in work; the leader's dispatcher looks at the queue.
- `fluxedit_cancel`: a cancel asked on a follower, of a prediction the leader's workers run.

Two dedicated connections, each in its own thread, so the event loop never waits on them: one sends (in the order
given), one listens and hands each notification to the loop. A broken connection is opened again; what was sent
while it was down is lost, which costs a long-poll its early answer (it still answers at its end, from the row).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import make_url

from ..schema import Status

log = logging.getLogger(__name__)
EVENTS, WAKE, CANCEL = "fluxedit_events", "fluxedit_wake", "fluxedit_cancel"
PROGRESS_EVERY_S = 0.5
MAX_PAYLOAD = 7900  # PostgreSQL refuses a notification payload of 8000 bytes or more
RECONNECT_S = 1.0


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it (postgresql://..., without the +psycopg driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgEventBus:
    def __init__(self, database_url: str):
        self.conninfo = libpq_url(database_url)
        self.replica = secrets.token_hex(6)
        self.on_event: Callable[[str, dict], None] = lambda key, event: None
        self.on_wake: Callable[[], None] = lambda: None
        self.on_cancel: Callable[[str], None] = lambda prediction_id: None
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pending_progress: dict[str, dict] = {}
        self._progress_flush: asyncio.TimerHandle | None = None
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listening = threading.Event()

    # ---- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for target, name in ((self._send_forever, "pg-notify"), (self._listen_forever, "pg-listen")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        await asyncio.to_thread(self._listening.wait, 10)  # events sent from now on reach this replica

    async def stop(self) -> None:
        self._flush_progress()
        self._stopping.set()
        self._outbox.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5)

    # ---- sending (from the event loop) ----------------------------------------------------

    def publish(self, key: str, event: dict) -> None:
        """Relay an event this replica's EventHub published (its `relay`)."""
        if event["type"] == "progress":
            self._pending_progress[key] = event
            if self._progress_flush is None and self._loop is not None:
                self._progress_flush = self._loop.call_later(PROGRESS_EVERY_S, self._flush_progress)
            return
        self._pending_progress.pop(key, None)  # a status supersedes the progress before it
        self._send(EVENTS, {"key": key, "event": _wire(event)})

    def wake_leader(self) -> None:
        if not self._wake_pending:  # many wake-ups in one loop turn are one notification
            self._wake_pending = True
            self._send(WAKE, {})

    def request_cancel(self, prediction_id: str) -> None:
        self._send(CANCEL, {"id": prediction_id})

    def _flush_progress(self) -> None:
        self._progress_flush = None
        pending, self._pending_progress = self._pending_progress, {}
        for key, event in pending.items():
            self._send(EVENTS, {"key": key, "event": _wire(event)})

    def _send(self, channel: str, body: dict) -> None:
        payload = json.dumps({"from": self.replica, **body}, separators=(",", ":"))
        if len(payload.encode()) > MAX_PAYLOAD and body.get("event", {}).get("preview"):
            body = {**body, "event": {**body["event"], "preview": None}}  # followers' streams get the step alone
            payload = json.dumps({"from": self.replica, **body}, separators=(",", ":"))
        if len(payload.encode()) > MAX_PAYLOAD:
            log.warning("an event of %s is too large to send to the other replicas", body.get("key"))
            return
        self._outbox.put((channel, payload))

    def _send_forever(self) -> None:
        import psycopg

        connection = None
        while not self._stopping.is_set():
            item = self._outbox.get()
            if item is None:
                break
            if item[0] == WAKE:
                self._wake_pending = False
            while not self._stopping.is_set():
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(self.conninfo, autocommit=True)
                    connection.execute("SELECT pg_notify(%s, %s)", item)
                    break
                except psycopg.Error:
                    log.warning("could not notify the other replicas; reconnecting", exc_info=True)
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = None
                    time.sleep(RECONNECT_S)
        if connection is not None:
            connection.close()

    # ---- listening (a thread; handlers run on the event loop) -------------------------------

    def _listen_forever(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    for channel in (EVENTS, WAKE, CANCEL):
                        connection.execute(f"LISTEN {channel}")
                    self._listening.set()
                    while not self._stopping.is_set():
                        for notification in connection.notifies(timeout=0.5):
                            self._received(notification.channel, notification.payload)
            except psycopg.Error:
                if not self._stopping.is_set():
                    log.warning("lost the connection that listens to the other replicas; reconnecting", exc_info=True)
                    time.sleep(RECONNECT_S)

    def _received(self, channel: str, payload: str) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if body.get("from") == self.replica or self._loop is None:
            return
        if channel == EVENTS:
            self._loop.call_soon_threadsafe(self.on_event, body["key"], _unwire(body["event"]))
        elif channel == WAKE:
            self._loop.call_soon_threadsafe(self.on_wake)
        elif channel == CANCEL:
            self._loop.call_soon_threadsafe(self.on_cancel, body["id"])


def _wire(event: dict) -> dict:
    """An EventHub event as JSON: a preview's bytes as base64."""
    preview = event.get("preview")
    return {**event, "preview": base64.b64encode(preview).decode()} if isinstance(preview, bytes) else event


def _unwire(event: dict) -> dict:
    if isinstance(event.get("preview"), str):
        event["preview"] = base64.b64decode(event["preview"])
    if "status" in event:
        event["status"] = Status(event["status"])
    return event
