"""One edit from start to downloaded images, reporting each denoising step on the way (runs in a thread).

The steps come from the prediction's server-sent event stream; should the stream break (a proxy that cuts
long responses, say), the edit is followed by long-polling instead, without step reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ..client import TERMINAL, Client, EditedImage

StepReport = Callable[[int, int], None]  # (step, total), called from the edit's thread


def run_edit(
    client: Client, image: Any, prompt: str, references: list[Any], options: dict[str, Any],
    started: Callable[[str], None], report: StepReport,
) -> tuple[dict, list[EditedImage]]:  # fmt: skip
    """Create the prediction (uploading local images first), follow it to its end, download the outputs.
    `started` gets the prediction's id as soon as it exists (to cancel it if the caller gives up)."""
    prediction = client.create(image, prompt, references=references, **options)
    started(prediction["id"])
    prediction = follow(client, prediction["id"], report)
    return prediction, client.download(prediction)


def follow(client: Client, prediction_id: str, report: StepReport) -> dict:
    """The ended prediction; `report` is called for each step the stream announces."""
    try:
        for event in client.stream(prediction_id):
            if event["event"] == "progress":
                report(int(event["data"]["step"]), int(event["data"]["total"]))
            elif event["event"] == "output" and event["data"].get("status") in TERMINAL:
                return event["data"]
    except httpx.TransportError:
        pass  # the stream broke; the prediction goes on regardless
    return client.wait(prediction_id)
