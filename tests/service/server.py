"""A real `fluxedit serve` process on 127.0.0.1 for tests, and small HTTP helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

FLUXEDIT = str(Path(sys.executable).with_name("fluxedit"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None, port: int | None = None):
        self.data_dir = data_dir
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, wait_ready: bool = True) -> Server:
        args = [FLUXEDIT, "serve", "--model", "tiny", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([*args, *self.extra], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                health = httpx.get(self.url + "/health", timeout=2).json()
                if health["status"] in ("ready", "busy"):
                    return health
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(self, key: str | None = None, timeout: float = 90) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def worker_pid(self) -> int:
        return httpx.get(self.url + "/health", timeout=5).json()["workers"][0]["pid"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode if self.process else 0

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create(client: httpx.Client, **input_fields) -> str:
    body = {"model": "flux-kontext-dev", "input": {"prompt": "make it blue", "num_inference_steps": 2, **input_fields}}
    response = client.post("/v1/prediction", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictionID"]


def wait_done(client: httpx.Client, prediction_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prediction = client.get(f"/v1/prediction/{prediction_id}", params={"wait": 30}).json()
        if prediction["status"] in ("success", "error", "cancelled"):
            return prediction
    raise TimeoutError(f"prediction {prediction_id} did not end")


def upload(client: httpx.Client, data: bytes, name: str = "photo.png") -> dict:
    response = client.post("/v1/files", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()
