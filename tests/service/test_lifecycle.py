"""Crashes, restarts and shutdowns: nothing a user sent is lost, nothing stays running forever."""

import os
import signal
import time

import httpx

from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

PHOTO = encoded(pattern(640, 480), "PNG")


def wait_for_status(client, prediction_id, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/prediction/{prediction_id}").json()["status"]
        if status in wanted:
            return status
        time.sleep(0.05)
    raise TimeoutError(f"{prediction_id} never reached {wanted}")


def test_killed_worker_fails_its_prediction_restarts_and_the_next_one_succeeds(tmp_path):
    with Server(tmp_path / "data") as server, server.client() as client:
        photo = upload(client, PHOTO)["id"]
        victim = create(client, image_url=photo, num_inference_steps=50)
        wait_for_status(client, victim, {"processing"})
        old_pid = server.worker_pid()
        os.kill(old_pid, signal.SIGKILL)
        failed = wait_done(client, victim)
        assert failed["status"] == "error"
        assert failed["output"]["error_code"] == "WORKER_LOST"
        assert "exit code -9" in failed["output"]["error_message"]
        after = wait_done(client, create(client, image_url=photo))
        assert after["status"] == "success"
        health = httpx.get(server.url + "/health").json()
        assert health["workers"][0]["restarts"] == 1 and server.worker_pid() != old_pid
        assert "fluxedit_worker_restarts_total 1.0" in httpx.get(server.url + "/metrics").text


def test_server_killed_with_queued_work_runs_it_after_restart(tmp_path):
    data = tmp_path / "data"
    server = Server(data).start()
    try:
        with server.client() as client:
            photo = upload(client, PHOTO)["id"]
            running = create(client, image_url=photo, num_inference_steps=50)
            queued = [create(client, image_url=photo, num_inference_steps=1, seed=i) for i in range(3)]
            wait_for_status(client, running, {"processing"})
            worker = server.worker_pid()
        server.stop(signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)  # kill -9 of the server leaves its child; an init system would too
    finally:
        server.stop()
    with Server(data, port=server.port) as restarted, restarted.client() as client:
        for prediction_id in queued:
            assert wait_done(client, prediction_id)["status"] == "success"
        again = wait_done(client, running, timeout=180)  # it was processing: re-queued once
        assert again["status"] == "success"
        assert "re-queued: the server stopped while it ran" in again["logs"]
        assert len(client.get("/v1/prediction", params={"limit": 10}).json()["data"]) == 4


def test_sigterm_drains_running_work_and_keeps_the_queue(tmp_path):
    data = tmp_path / "data"
    server = Server(data, env={"FLUXEDIT_DRAIN_TIMEOUT": "60"}).start()
    with server.client() as client:
        photo = upload(client, PHOTO)["id"]
        running = create(client, image_url=photo, num_inference_steps=8)
        queued = create(client, image_url=photo, num_inference_steps=1)
        wait_for_status(client, running, {"processing"})
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    assert "Application shutdown complete" in server.log()
    with Server(data, port=server.port) as restarted, restarted.client() as client:
        finished = client.get(f"/v1/prediction/{running}").json()
        assert finished["status"] == "success"  # it was allowed to finish before the server stopped
        assert wait_done(client, queued)["status"] == "success"  # the queue survived the stop


def test_sigterm_requeues_work_that_cannot_finish_in_time(tmp_path):
    data = tmp_path / "data"
    server = Server(data, env={"FLUXEDIT_DRAIN_TIMEOUT": "0.5"}).start()
    with server.client() as client:
        photo = upload(client, PHOTO)["id"]
        running = create(client, image_url=photo, num_inference_steps=20)
        wait_for_status(client, running, {"processing"})
    server.stop(signal.SIGTERM)
    with Server(data, port=server.port) as restarted, restarted.client() as client:
        prediction = wait_done(client, running, timeout=180)
        assert prediction["status"] == "success"
        assert "re-queued: the server is stopping" in prediction["logs"]


def test_a_prediction_that_runs_too_long_fails_with_execution_timeout(tmp_path):
    with Server(tmp_path / "data", env={"FLUXEDIT_EXECUTION_TIMEOUT": "1"}) as server, server.client() as client:
        prediction = wait_done(client, create(client, image_url=upload(client, PHOTO)["id"], num_inference_steps=50))
        assert prediction["status"] == "error"
        assert prediction["output"] == {"error_code": "EXECUTION_TIMEOUT", "error_message": "it ran longer than 1 s"}


def test_when_no_worker_can_load_the_model_nothing_stays_queued(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    server = Server(tmp_path / "data", env=env)
    server.extra = ("--model", "black-forest-labs/FLUX.1-Kontext-dev")
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(server.url + "/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
        with server.client() as client:
            photo = upload(client, PHOTO)["id"]
            response = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo}})
            if response.status_code == 503:  # the worker had already failed: creation says why
                assert "no worker can run predictions" in response.json()["error"]
            else:
                prediction = wait_done(client, response.json()["predictionID"])
                assert prediction["output"]["error_code"] == "MODEL_UNAVAILABLE"
                assert "not in the local Hugging Face cache" in prediction["output"]["error_message"]
            health = httpx.get(server.url + "/health")
            assert health.status_code == 503 and health.json()["status"] == "failed"
    finally:
        server.stop()
