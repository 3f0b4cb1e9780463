"""docs/training.md: a training runs in slices, each ending with a checkpoint, so a worker crash or a server
restart loses at most one slice. Through a real server: the worker is killed mid-training, then the server and
its worker are killed with -9 and the server started again; the training ends with every step, and the
checkpoints written before each interruption were not written again (it went on from them, not from step 0)."""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy import select

from fluxedit.store.database import open_database
from fluxedit.store.models import StoredFile
from tests.service.server import Server
from tests.service.test_trainings_api import FIELDS, pairs_zip, wait_training

SLICE = 5
STEPS = 30


def progress_past(client, training_id: str, step: int, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        training = client.get(f"/v1/trainings/{training_id}").json()
        assert training["status"] in ("created", "starting", "processing"), training
        if training["progress"]["step"] >= step:
            return training["progress"]["step"]
        time.sleep(0.1)
    raise TimeoutError(f"{training_id} never passed step {step}")


def checkpoint_times(data_dir) -> dict[int, float]:
    """The checkpoints in the server's file store (service/training_files.py: one record per step, a step written
    again replaces its record), step -> when it was stored."""
    sessions = open_database(f"sqlite:///{data_dir / 'fluxedit.db'}")
    try:
        with sessions() as session:
            records = session.scalars(select(StoredFile).where(StoredFile.purpose == "checkpoint")).all()
    finally:
        sessions.kw["bind"].dispose()
    return {int(r.filename.rsplit("step-", 1)[1].removesuffix(".zip")): r.created_at.timestamp() for r in records}


def test_a_training_survives_a_worker_crash_and_a_server_restart_losing_at_most_a_slice(tmp_path):
    data = tmp_path / "data"
    env = {"FLUXEDIT_TRAINING_SLICE_STEPS": str(SLICE), "FLUXEDIT_TRAINING_KEEP_CHECKPOINTS": "20"}
    server = Server(data, env=env).start()
    try:
        with server.client() as client:
            fields = {**FIELDS, "name": "survivor", "steps": str(STEPS)}
            created = client.post("/v1/trainings", files={"data": ("pairs.zip", pairs_zip())}, data=fields)
            assert created.status_code == 201, created.text
            training_id = created.json()["id"]

            progress_past(client, training_id, SLICE + 2)  # one slice done and checkpointed, the next under way
            os.kill(server.worker_pid(), signal.SIGKILL)
            crashed_at = time.time()
            before_crash = {step for step, written in checkpoint_times(data).items() if written < crashed_at}
            assert SLICE in before_crash

            progress_past(client, training_id, max(before_crash) + SLICE + 2)
            worker = server.worker_pid()
        server.stop(signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)  # kill -9 of the server leaves its child, as an init system would
        killed_at = time.time()
    finally:
        server.stop()
    before_kill = {step for step, written in checkpoint_times(data).items() if written < killed_at}
    assert max(before_kill) > max(before_crash)

    with Server(data, port=server.port, env=env) as restarted, restarted.client() as client:
        done = wait_training(client, training_id, timeout=600)
    assert done["status"] == "success", done["logs"]
    assert done["progress"]["step"] == STEPS and len(done["losses"]) == STEPS
    assert "the worker stopped; resuming from the last checkpoint" in done["logs"]
    assert "re-queued: the server stopped while it trained" in done["logs"]
    written = checkpoint_times(data)
    assert set(range(SLICE, STEPS + 1, SLICE)) <= set(written)
    # Went on from the newest checkpoint each time: none written before an interruption was written again, so
    # at most the slice under way (its steps after that checkpoint) was done twice.
    assert all(written[step] < crashed_at for step in before_crash)
    assert all(written[step] < killed_at for step in before_kill)
