"""Webhooks for predictions: the seed platform's by default, or a dialect's registered format.

Every status change of a prediction reaches `changed` (a subscriber of the predictions' Lifecycle,
inside the change's transaction); this module decides whether that change is worth a call.
The seed's webhook fires once, when a prediction succeeds or fails.
A dialect format (Replicate's) fires on the events its caller chose: start, output, logs, completed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..schema import Status
from ..store.files import FileStore
from ..store.models import Prediction
from .urls import output_url
from .webhooks import HeaderSigner

log = logging.getLogger(__name__)

EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = ("output", "completed")  # Replicate's default: new outputs and the end


@dataclass(frozen=True)
class WebhookFormat:
    """A dialect's webhook: the body it sends for a prediction and how it signs each try."""

    payload: Callable[[Prediction], dict]
    signer: HeaderSigner


def change_events(previous_status: Status | None, prediction: Prediction, logged: bool) -> set[str]:
    """The events one change of a prediction is: created (None before) is its start."""
    events = set()
    if previous_status is None:
        events.add("start")
    if prediction.status == Status.success:
        events.add("output")  # outputs arrive all at once, at the end
    if logged:
        events.add("logs")
    if prediction.status.ended:
        events.add("completed")
    return events


class PredictionWebhooks:
    def __init__(self, sender, files: FileStore):
        self.sender = sender
        self.files = files
        self.formats: dict[str, WebhookFormat] = {}

    def register(self, name: str, webhook_format: WebhookFormat) -> None:
        self.formats[name] = webhook_format
        self.sender.register_signer(name, webhook_format.signer)  # stored deliveries name their signer

    def changed(
        self, prediction: Prediction, previous_status: Status | None, logged: bool, session: Session | None = None
    ) -> None:
        """Called inside the transaction that created or changed a prediction with a webhook
        (`session`): the delivery is stored with the change, or not at all."""
        if not prediction.webhook_url:
            return
        if prediction.webhook_format is None:
            if prediction.status in (Status.success, Status.error):
                self.deliver(prediction, session)
            return
        wanted = set(prediction.webhook_events or DEFAULT_EVENTS)
        if wanted & change_events(previous_status, prediction, logged):
            chosen = self.formats.get(prediction.webhook_format)
            if chosen is None:  # a status change must never fail over a webhook
                log.warning("no webhook format %r: webhook of %s not sent", prediction.webhook_format, prediction.id)
                return
            self._enqueue(prediction, chosen.payload(prediction), prediction.webhook_format, session)

    def payload(self, prediction: Prediction) -> dict:
        if prediction.status == Status.success:
            present = self.files.present(prediction.output or [])  # what views show: a deleted output is left out
            output = [
                output_url(prediction.base_url, file_id, present[file_id].content_type)
                for file_id in prediction.output or []
                if file_id in present
            ]
            return {"exec_id": prediction.id, "flow_id": None, "status": "succeeded", "output": output, "error": ""}
        error = {"error_code": prediction.error_code, "error_message": prediction.error_message}
        return {
            "exec_id": prediction.id,
            "flow_id": None,
            "status": "failed",
            "output": error,
            "error": prediction.error_message or "",
        }

    def deliver(self, prediction: Prediction, session: Session | None = None) -> None:
        self._enqueue(prediction, self.payload(prediction), None, session)

    def _enqueue(self, prediction: Prediction, payload: dict, signer: str | None, session: Session | None) -> None:
        """Into the outbox: sent in the background, retried, and kept across restarts until it arrives."""
        try:
            self.sender.enqueue(
                prediction.id,
                prediction.webhook_url,
                payload,
                prediction.webhook_secret,
                signer=signer,
                prediction_status=prediction.status,
                session=session,
            )
        except Exception:  # a status change must never fail over a webhook
            log.exception("webhook of %s (%s) could not be stored; not sent", prediction.id, prediction.status)
