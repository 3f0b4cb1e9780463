"""A queued row that no longer validates (written by an older version) ends with its reason; the queue goes on."""

from __future__ import annotations

import secrets
import sqlite3

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done


def test_a_stored_input_that_no_longer_validates_fails_and_does_not_stall_the_queue(tmp_path):
    data = tmp_path / "data"
    with Server(data) as server, server.client() as http:
        file_id = upload(http, encoded(pattern(64, 64), "PNG"))["id"]
        template = wait_done(http, create(http, image_url=file_id, num_inference_steps=1))["id"]
    stale = secrets.token_hex(12)
    with sqlite3.connect(data / "fluxedit.db") as db:  # as an older version stored it: a boolean step count
        copied = "owner_key_id, model, version, input_files, lora_files, width, height, cost, base_url, created_at"
        db.execute(
            f"INSERT INTO predictions (id, status, input, inputs_ready, logs, metrics, attempts, {copied}) "
            f"SELECT ?, 'created', ?, 1, '', '{{}}', 0, {copied} FROM predictions WHERE id = ?",
            (stale, f'{{"prompt": "old", "image_url": "{file_id}", "num_inference_steps": true}}', template),
        )
    with Server(data) as server, server.client() as http:
        ended = wait_done(http, stale)
        assert ended["status"] == "error"
        assert ended["output"]["error_code"] == "INPUT_VALIDATION_ERROR"
        assert "num_inference_steps" in ended["output"]["error_message"]
        assert wait_done(http, create(http, image_url=file_id, num_inference_steps=1))["status"] == "success"
