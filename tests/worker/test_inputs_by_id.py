"""A worker reads a job's inputs by file-store id and checks them against their record: bytes changed on disk
after they were stored fail the prediction with the reason, instead of editing some other image."""

from __future__ import annotations

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done


def test_an_input_whose_stored_bytes_changed_fails_naming_the_file_and_an_intact_one_succeeds(tmp_path):
    with Server(tmp_path / "data") as server, server.client() as client:
        intact = upload(client, encoded(pattern(64, 48, seed=1), "PNG"))["id"]
        changed = upload(client, encoded(pattern(64, 48, seed=2), "PNG"))["id"]
        stored = tmp_path / "data" / "files" / changed[-2:] / changed
        stored.write_bytes(encoded(pattern(64, 48, seed=3), "PNG"))  # same kind and size, other bytes
        failed = wait_done(client, create(client, image_url=changed))
        assert failed["status"] == "error", failed
        assert failed["output"]["error_code"] == "INPUT_VALIDATION_ERROR"
        assert changed in failed["output"]["error_message"] and "does not match" in failed["output"]["error_message"]
        assert wait_done(client, create(client, image_url=intact))["status"] == "success"
