"""Which API replica dispatches: the only one on SQLite; on PostgreSQL, the holder of an advisory lock.

Several `fluxedit serve` on one PostgreSQL share its queue. One of them, the leader, owns the worker pool and
dispatches: it holds a session advisory lock (pg_try_advisory_lock) on a connection of its own. The others,
followers, take requests and write rows, wake the leader when they queue work and hand it the cancels of what it
runs (service/pg_events.py); every replica relays its events to the others, so waiting works anywhere. Each
follower tries for the lock every second: when the leader stops or dies its connection closes, the lock is free,
and the next replica to take it runs the runner's start-up recovery (what was starting or processing is re-queued
once) and starts dispatching. Why one dispatcher rather than row claims: docs/scale-out.md.

On SQLite (one machine, one replica) the replica is the leader from the start: nothing changes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from .pg_events import PgEventBus, libpq_url

log = logging.getLogger(__name__)
LEADER_LOCK = 0x666C7865_0002  # the advisory lock's key: "flxe", 2 (store/database.py's migrations use 1)
RETRY_S = 1.0

Lead = Callable[[], Awaitable[None]]


class SharedWake(asyncio.Event):
    """The dispatcher's wake-up. On a follower, setting it also wakes the leader (`forward`)."""

    forward: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        if self.forward is not None:
            self.forward()

    def set_here(self) -> None:
        super().set()


class SingleReplica:
    """SQLite: this replica is the only one, and leads from the start."""

    leading = False
    role = "single"

    def wire(self, hub, runner) -> None:
        pass

    async def start(self, lead: Lead) -> None:
        self.leading = True
        await lead()

    async def stop(self) -> None:
        pass


class PgReplica:
    """One of several replicas on PostgreSQL: follows until it holds the leader lock, then leads."""

    def __init__(self, database_url: str, retry_s: float = RETRY_S):
        self.conninfo = libpq_url(database_url)
        self.bus = PgEventBus(database_url)
        self.retry_s = retry_s
        self.leading = False
        self._lock_connection = None
        self._electing: asyncio.Task | None = None
        self._wake: SharedWake | None = None
        self._runner = None

    @property
    def role(self) -> str:
        return "leader" if self.leading else "follower"

    def wire(self, hub, runner) -> None:
        """Events out and in, the wake-up and cancels: until it leads, this replica forwards both to the leader."""
        self._runner = runner
        self._wake = runner.context.wake
        hub.relay = self.bus.publish
        self.bus.on_event = hub.received
        self.bus.on_wake = self._on_wake
        self.bus.on_cancel = self._on_cancel
        self._wake.forward = self.bus.wake_leader
        runner.forward_cancel = self.bus.request_cancel

    async def start(self, lead: Lead) -> None:
        """Listen to the others; take the lead now if it is free (a lone replica serves as the leader from its
        first request), else keep trying in the background."""
        await self.bus.start()
        if await asyncio.to_thread(self._try_lock):
            await self._take_lead(lead)
        self._electing = asyncio.create_task(self._elect_forever(lead))

    async def stop(self) -> None:
        if self._electing is not None:
            self._electing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._electing
        await asyncio.to_thread(self._release)
        await self.bus.stop()

    async def _take_lead(self, lead: Lead) -> None:
        self.leading = True
        self._wake.forward = None  # its own wake-ups are its own dispatcher's
        log.warning("this replica leads: it dispatches the queue and runs the workers")
        await lead()

    async def _elect_forever(self, lead: Lead) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            if not self.leading:
                if await asyncio.to_thread(self._try_lock):
                    await self._take_lead(lead)
            elif not await asyncio.to_thread(self._still_held):
                self._lost()
                return

    def _on_wake(self) -> None:
        if self.leading:
            self._wake.set_here()

    def _on_cancel(self, prediction_id: str) -> None:
        if self.leading:
            self._runner.context.spawn(self._runner.cancel(prediction_id))

    def _lost(self) -> None:
        """The lock's connection broke: another replica may lead already. Two dispatchers would run work twice,
        so this one stops (its process manager starts it again, as a follower)."""
        log.critical("this replica lost the leader lock (its database connection broke): stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    # ---- the lock's connection (in a thread: never on the event loop) -----------------------

    def _try_lock(self) -> bool:
        import psycopg

        try:
            if self._lock_connection is None or self._lock_connection.closed:
                self._lock_connection = psycopg.connect(self.conninfo, autocommit=True)
            row = self._lock_connection.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            return bool(row[0])
        except psycopg.Error:
            log.warning("could not ask for the leader lock; trying again", exc_info=True)
            self._release()
            return False

    def _still_held(self) -> bool:
        import psycopg

        try:
            self._lock_connection.execute("SELECT 1")  # the session lives: its advisory lock is still ours
            return True
        except (psycopg.Error, AttributeError):
            return False

    def _release(self) -> None:
        connection, self._lock_connection = self._lock_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()  # closing the session frees its advisory lock


def replica_for(database_url: str):
    """SingleReplica on SQLite, PgReplica on PostgreSQL."""
    from ..store.database import is_postgresql

    return PgReplica(database_url) if is_postgresql(database_url) else SingleReplica()
