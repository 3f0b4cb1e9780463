"""A worker whose server is killed with -9 exits at once, mid-step, so the GPU is free for the next server."""

import signal
import time

import psutil

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload

PHOTO = encoded(pattern(640, 480), "PNG")  # about 1 MP out: each step of the tiny model takes a while


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (reaping it falls to whatever adopted it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for_progress(client, prediction_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prediction = client.get(f"/v1/prediction/{prediction_id}").json()
        if prediction["status"] == "processing":
            return
        time.sleep(0.05)
    raise TimeoutError(f"{prediction_id} never started")


def test_a_worker_exits_within_two_seconds_of_its_server_being_killed_mid_step(tmp_path):
    server, worker = Server(tmp_path / "data").start(), None
    try:
        with server.client() as client:
            photo = upload(client, PHOTO)["id"]
            victim = create(client, image_url=photo, num_inference_steps=50)  # a minute of work or more
            wait_for_progress(client, victim)
            worker = server.worker_pid()
            time.sleep(0.3)  # inside a denoising step, not between jobs
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        deadline = time.monotonic() + 2.0
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running(worker), "the orphaned worker still runs 2 s after its server was killed"
    finally:
        server.stop()
        if worker is not None and running(worker):
            psutil.Process(worker).kill()
