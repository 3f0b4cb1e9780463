"""In-process fan-out of prediction events to long-pollers and SSE streams.

Waiting costs one asyncio.Event or Queue per waiter, no thread and no polling
of the database, so thousands of concurrent long-polls are cheap.

With several API replicas (PostgreSQL), what one replica publishes is also handed to `relay` (service/pg_events.py
sends it to the others), and what another replica published arrives through `received`, which wakes the waiters
here as a local event would, without relaying it again.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

SUBSCRIBER_BUFFER = 256


class EventHub:
    def __init__(self) -> None:
        self._finished: dict[str, asyncio.Event] = {}
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self.latest_progress: dict[str, dict] = {}  # the last progress event, for streams that join late
        self.relay: Callable[[str, dict], None] | None = None  # other replicas' share of each event

    def finished_event(self, prediction_id: str) -> asyncio.Event:
        return self._finished.setdefault(prediction_id, asyncio.Event())

    async def wait_finished(self, prediction_id: str, timeout: float) -> bool:
        event = self.finished_event(prediction_id)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if not event.is_set() and prediction_id in self._finished and not self._has_other_waiters(event):
                self._finished.pop(prediction_id, None)

    @staticmethod
    def _has_other_waiters(event: asyncio.Event) -> bool:
        return bool(getattr(event, "_waiters", None))

    def subscribe(self, prediction_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_BUFFER)
        self._subscribers[prediction_id].add(queue)
        return queue

    def unsubscribe(self, prediction_id: str, queue: asyncio.Queue) -> None:
        subscribers = self._subscribers.get(prediction_id)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del self._subscribers[prediction_id]

    def publish(self, prediction_id: str, event: dict) -> None:
        self._fan_out(prediction_id, event)
        if self.relay is not None:
            self.relay(prediction_id, event)

    def received(self, prediction_id: str, event: dict) -> None:
        """An event another replica published: streams get it, and its end wakes the long-polls here."""
        self._fan_out(prediction_id, event)
        if event["type"] == "done":
            self.finish(prediction_id)

    def _fan_out(self, prediction_id: str, event: dict) -> None:
        if event["type"] == "progress":
            self.latest_progress[prediction_id] = event
        for queue in list(self._subscribers.get(prediction_id, ())):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                if event["type"] != "progress":  # a slow reader may miss progress, never the status
                    queue.get_nowait()
                    queue.put_nowait(event)

    def finish(self, prediction_id: str) -> None:
        event = self._finished.pop(prediction_id, None)
        if event is not None:
            event.set()
        self.latest_progress.pop(prediction_id, None)
