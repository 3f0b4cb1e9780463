"""Webhooks for predictions, in the seed platform's shape: sent when one succeeds or fails."""

from __future__ import annotations

from ..store.files import FileStore
from ..store.models import Prediction
from .urls import output_url


class PredictionWebhooks:
    def __init__(self, sender, files: FileStore):
        self.sender = sender
        self.files = files

    def payload(self, prediction: Prediction) -> dict:
        if prediction.status == "success":
            output = [self._url(prediction.base_url, file_id) for file_id in prediction.output or []]
            return {"exec_id": prediction.id, "flow_id": None, "status": "succeeded", "output": output, "error": ""}
        error = {"error_code": prediction.error_code, "error_message": prediction.error_message}
        return {
            "exec_id": prediction.id,
            "flow_id": None,
            "status": "failed",
            "output": error,
            "error": prediction.error_message or "",
        }

    def deliver(self, prediction: Prediction) -> None:
        self.sender.send(
            prediction.webhook_url, self.payload(prediction), prediction.webhook_secret, delivery_id=prediction.id
        )

    def _url(self, base_url: str, file_id: str) -> str:
        record = self.files.get(file_id)
        return output_url(base_url, file_id, record.content_type)
