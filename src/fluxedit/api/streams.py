"""Server-Sent Events for one prediction, shared by the dialects."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel

from ..schema import ENDED_STATUSES
from ..service.services import Services

HEARTBEAT_S = 15.0


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def prediction_events(
    services: Services, prediction_id: str, base_url: str, previews: bool, view: Callable[..., BaseModel]
) -> AsyncIterator[bytes]:
    queue = services.hub.subscribe(prediction_id)  # before reading the state: no event falls in between
    try:
        prediction = services.runner.get(prediction_id)
        yield sse("status", {"id": prediction_id, "status": prediction.status})
        if prediction.status in ENDED_STATUSES:
            yield sse("output", view(services, prediction, base_url).model_dump(mode="json"))
            yield sse("done", {"status": prediction.status})
            return
        joined_late = services.hub.latest_progress.get(prediction_id)
        if joined_late is not None:
            for chunk in _progress(joined_late, previews):
                yield chunk
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event["type"] == "status":
                yield sse("status", {"id": prediction_id, "status": event["status"]})
            elif event["type"] == "progress":
                for chunk in _progress(event, previews):
                    yield chunk
            elif event["type"] == "done":
                ended = services.runner.get(prediction_id)
                yield sse("output", view(services, ended, base_url).model_dump(mode="json"))
                yield sse("done", {"status": event["status"]})
                return
    finally:
        services.hub.unsubscribe(prediction_id, queue)


def _progress(event: dict, previews: bool) -> list[bytes]:
    chunks = [sse("progress", {"step": event["step"], "total": event["total"]})]
    if previews and event.get("preview"):
        image = "data:image/jpeg;base64," + base64.b64encode(event["preview"]).decode()
        chunks.append(sse("preview", {"step": event["step"], "image": image}))
    return chunks
