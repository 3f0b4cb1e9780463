"""Access fails closed, and spending limits reserve the price of queued and running work.

- Once a key has existed (revoked ones too), a request without a valid key is refused, whatever
  happens to the key table while the server runs; the first key adopts what was made without one.
- Concurrent creates cannot all pass one spending check: the check and the insert are one step,
  and an image fetched later reserves the most it can cost until its size is known.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from sqlalchemy import delete

from fluxedit.imaging.decode import MAX_ASPECT
from fluxedit.resolution import RESOLUTION_MODES, output_size
from fluxedit.service.access import is_loopback_host, why_a_key_is_needed
from fluxedit.service.admission import MAX_UNITS_PER_IMAGE
from fluxedit.service.keys import KeyRing
from fluxedit.service.pricing import megapixel_units
from fluxedit.store.database import open_database
from fluxedit.store.models import ApiKey
from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server, create, upload, wait_done
from tests.service.test_keys_and_billing import make_key

PHOTO = encoded(pattern(640, 480), "PNG")
SMALL = encoded(pattern(64, 48), "PNG")  # 4:3 like PHOTO: the same 1184x880 output, one price unit ($0.025)
SMALL_URI = "data:image/png;base64," + base64.b64encode(SMALL).decode()


def keys_cli(data_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([FLUXEDIT, "keys", *args, "--data-dir", str(data_dir)], capture_output=True, text=True)


# ---- failing closed ---------------------------------------------------------------------------------


def test_revoking_every_key_keeps_the_server_closed_and_the_first_key_adopts_keyless_work(tmp_path):
    data = tmp_path / "data"
    with Server(data) as server, server.client() as anonymous:
        photo = upload(anonymous, PHOTO)["id"]  # no key exists yet: loopback callers need none
        before = wait_done(anonymous, create(anonymous, image_url=photo, num_inference_steps=1))
        made = keys_cli(data, "create", "first")
        assert made.returncode == 0, made.stderr
        assert "adopted 1 prediction, 2 files" in made.stderr  # the upload and the output
        key = made.stdout.strip()
        assert anonymous.get("/v1/prediction").status_code == 401  # keys exist now
        with server.client(key) as first:
            assert first.get(f"/v1/prediction/{before['id']}").json()["status"] == "success"  # not vanished
            assert first.get(f"/v1/files/{photo}").status_code == 200
        assert keys_cli(data, "revoke", "first").returncode == 0
        # No active key is left: still closed, and the revoked key stays refused, in every dialect.
        assert anonymous.get("/v1/prediction").status_code == 401
        revoked = {"Authorization": f"Bearer {key}"}
        seed = anonymous.get("/v1/prediction", headers=revoked)
        assert seed.status_code == 401 and "not valid" in seed.json()["error"]
        replicate = anonymous.get("/v1/predictions", headers=revoked)
        assert replicate.status_code == 401 and replicate.json()["title"] == "Unauthenticated"
        openai = anonymous.post("/v1/images/edits", headers=revoked, files={"image": ("a.png", SMALL)},
                                data={"prompt": "x"})  # fmt: skip
        assert openai.status_code == 401 and openai.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": SMALL_URI}}).status_code \
            == 401  # fmt: skip
    with Server(data) as restarted:  # and after a restart
        assert httpx.get(restarted.url + "/v1/prediction").status_code == 401
    refused = subprocess.run(
        [FLUXEDIT, "serve", "--model", "tiny", "--host", "0.0.0.0", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "every key is revoked" in refused.stderr


def test_the_decision_latches_closed_and_beyond_loopback_a_key_is_needed(tmp_path):
    keys = KeyRing(open_database(f"sqlite:///{tmp_path / 'keys.db'}"))
    assert why_a_key_is_needed(keys, "127.0.0.1", allow_unauthenticated=False) is None
    assert "listens on 0.0.0.0" in why_a_key_is_needed(keys, "0.0.0.0", allow_unauthenticated=False)
    assert why_a_key_is_needed(keys, "0.0.0.0", allow_unauthenticated=True) is None  # the operator said so
    made = keys.create("only")
    keys.revoke("only")
    assert why_a_key_is_needed(keys, "127.0.0.1", allow_unauthenticated=True) is not None
    with keys.sessions.begin() as session:  # the key table changes under the running server
        session.execute(delete(ApiKey).where(ApiKey.id == made.record.id))
    assert why_a_key_is_needed(keys, "127.0.0.1", allow_unauthenticated=True) is not None
    assert keys.authenticate(made.key) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("myhost.lan", False),
     ("", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


# ---- spending limits --------------------------------------------------------------------------------


class HeldImage:
    """An image URL on 127.0.0.1 whose answer waits until `release()`: a prediction stays unprepared."""

    def __init__(self, data: bytes):
        self.released = threading.Event()
        released = self.released

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                released.wait(60)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/photo.png"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.http.shutdown()


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits") / "data"
    keys = {"capped": make_key(data, "capped", "--limit", "0.05"), "ceiling": make_key(data, "ceiling", "--limit",
            "0.075")}  # fmt: skip
    with Server(data, "--allow-private-urls") as server:
        yield server, keys


def post_edit(client: httpx.Client, image_url: str) -> httpx.Response:
    body = {"model": "flux-kontext-dev", "input": {"prompt": "blue", "image_url": image_url, "num_inference_steps": 1}}
    return client.post("/v1/prediction", json=body)


def test_concurrent_creates_cannot_pass_the_spending_limit_together(limited):
    server, keys = limited
    with server.client(keys["capped"]) as capped, ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post_edit(capped, SMALL_URI), range(10)))  # $0.025 each, $0.05 allowed
        admitted = [a.json()["predictionID"] for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert len(admitted) == 2, [a.text for a in answers]
        assert all(a.status_code == 402 and "$0.05 spending limit" in a.json()["error"] for a in refused)
        assert "reserved by its queued and running predictions" in refused[0].json()["error"]
        assert [wait_done(capped, p)["metrics"]["cost"] for p in admitted] == [0.025, 0.025]
        assert capped.get("/v1/usage").json()["total"]["cost"] == 0.05  # never more than the limit
        assert post_edit(capped, SMALL_URI).status_code == 402


def test_an_image_fetched_later_reserves_its_highest_price_until_its_size_is_known(limited):
    server, keys = limited
    held = HeldImage(SMALL)
    try:
        with server.client(keys["ceiling"]) as client:  # a $0.075 limit
            fetched = post_edit(client, held.url)
            assert fetched.status_code == 200, fetched.text
            waiting = client.get(f"/v1/prediction/{fetched.json()['predictionID']}").json()
            assert waiting["status"] == "created" and waiting["metrics"]["cost"] == 0.05  # 2 units reserved
            assert post_edit(client, SMALL_URI).status_code == 200  # $0.05 + $0.025
            assert post_edit(client, SMALL_URI).status_code == 402  # a third $0.025 would pass $0.075
            held.release()
            settled = wait_done(client, fetched.json()["predictionID"])
            assert settled["status"] == "success" and settled["metrics"]["cost"] == 0.025  # the real price
            assert post_edit(client, SMALL_URI).status_code == 200  # the released $0.025 is spendable again
            assert post_edit(client, SMALL_URI).status_code == 402
    finally:
        held.close()


def test_no_output_size_costs_more_than_the_reserved_ceiling():
    aspects = np.concatenate([np.linspace(1 / MAX_ASPECT, 1, 2000), np.linspace(1, MAX_ASPECT, 2000)])
    for mode in RESOLUTION_MODES:
        for aspect in aspects:
            width, height = output_size(mode, round(1000 * aspect), 1000)
            assert megapixel_units(width, height) <= MAX_UNITS_PER_IMAGE, (mode, aspect, width, height)


def _own_address() -> str | None:
    """This machine's address on its first non-loopback interface (a UDP connect sends nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if is_loopback_host(address) else address


def test_a_server_bound_beyond_loopback_some_other_way_is_closed_without_keys(tmp_path):
    # Started by uvicorn itself on 0.0.0.0 while the settings still say 127.0.0.1: the socket decides.
    import sys
    import time

    from tests.service.server import free_port

    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback")
    port = free_port()
    script = (
        "import uvicorn\n"
        "from fluxedit.api.app import create_app\n"
        "from fluxedit.config import Settings\n"
        f"app = create_app(Settings(model='tiny', data_dir={str(tmp_path / 'data')!r}))\n"
        f"uvicorn.run(app, host='0.0.0.0', port={port}, log_level='warning')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the server did not start"
            time.sleep(0.2)
        from_outside = httpx.get(f"http://{address}:{port}/v1/prediction", timeout=10)
        assert from_outside.status_code == 401, from_outside.text
        assert f"listens on {address}" in from_outside.json()["error"]
        assert str((tmp_path / "data").resolve()) in from_outside.json()["error"]  # the folder to make a key in
        assert httpx.get(f"http://127.0.0.1:{port}/v1/prediction", timeout=10).status_code == 200  # this machine
    finally:
        process.terminate()
        process.wait(60)
