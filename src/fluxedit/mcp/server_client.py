"""The Python client, plus the few calls the tools need that it does not have yet (LoRAs, trainings).

They go through the client's own request path, so 429 retries and the server's {"error": ...} messages
behave exactly as for its other methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..client import MAX_WAIT_SLICE_S, Client


class ServerClient(Client):
    def loras(self) -> dict:
        """GET /v1/loras: the LoRAs registered for this key."""
        return self._request("GET", "/v1/loras").json()

    def start_training(self, data: str | Path, options: dict[str, Any]) -> dict:
        """POST /v1/trainings: a zip by URL (JSON body, the server downloads it) or a local zip (multipart)."""
        if isinstance(data, Path):
            fields = {name: _form_text(value) for name, value in options.items()}
            with data.open("rb") as zip_file:
                files = {"data": (data.name, zip_file, "application/zip")}
                return self._request("POST", "/v1/trainings", data=fields, files=files).json()
        return self._request("POST", "/v1/trainings", json={"input": {"data": data, **options}}).json()

    def training(self, training_id: str, wait: float = 0) -> dict:
        """GET /v1/trainings/{id}; with `wait`, held until it ends or `wait` s (60 at most) pass."""
        params = {"wait": wait} if wait > 0 else None
        timeout = self.timeout + min(wait, MAX_WAIT_SLICE_S)
        path = f"/v1/trainings/{quote(training_id, safe='')}"
        return self._request("GET", path, params=params, timeout=timeout).json()


def _form_text(value: Any) -> str:
    """A form field as the server reads it back (JSON for numbers, so 1e-4 stays a number)."""
    return value if isinstance(value, str) else json.dumps(value)
