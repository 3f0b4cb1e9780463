"""Bad input never stalls, crashes or swells the server: waits, request bodies and image decoding are bounded."""

from __future__ import annotations

import base64
import io
import json
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fluxedit.imaging.decode import estimated_decode_bytes
from tests.service.server import Server, upload

MB = 1024 * 1024
BAD_WAITS = ["nan", "NaN", "inf", "-inf", "-1", "1e999", "soon", ""]


class HeldImageHost(BaseHTTPRequestHandler):
    """Holds every GET until the test releases it: a prediction fetching from here stays unfinished."""

    release = threading.Event()

    def do_GET(self):
        self.release.wait(60)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def held_host():
    host = ThreadingHTTPServer(("127.0.0.2", 0), HeldImageHost)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{host.server_address[1]}"
    HeldImageHost.release.set()
    host.shutdown()


def unfinished_prediction(client: httpx.Client, held_host: str) -> str:
    """A prediction that stays unfinished (its input is being fetched) while the test runs."""
    body = {"input": {"prompt": "make it blue", "image_url": f"{held_host}/photo.jpg", "num_inference_steps": 1}}
    response = client.post("/v1/prediction", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictionID"]


def rss_peak(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


# ---- waits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits") / "data"
    env = {"FLUXEDIT_MAX_JSON_BYTES": str(8 * MB)}
    with Server(data, "--allow-network", "127.0.0.2/32", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client(timeout=30) as http:
        yield http


@pytest.mark.parametrize("wait", BAD_WAITS)
def test_a_wait_that_is_not_a_number_of_seconds_is_refused_in_each_dialect(client, held_host, wait):
    prediction_id = unfinished_prediction(client, held_host)
    limit = "must be a number of seconds from 0 to 60"
    seed = client.get(f"/v1/prediction/{prediction_id}", params={"wait": wait})
    assert seed.status_code == 422, seed.text
    assert seed.json()["error"].startswith(f"wait: {limit}")
    replicate = client.get(f"/v1/predictions/{prediction_id}", params={"wait": wait})
    assert replicate.status_code == 422, replicate.text
    assert replicate.json()["detail"].startswith(f"wait: {limit}")
    assert replicate.json()["invalid_fields"][0]["field"] == "wait"
    training = client.get("/v1/trainings/training_0000", params={"wait": wait})
    assert training.status_code == 422 and training.json()["error"].startswith(f"wait: {limit}")


@pytest.mark.parametrize("prefer", ["wait=nan", "wait=-5", "wait=soon", "wait=1e999", "respond-async, wait=inf"])
def test_an_invalid_prefer_wait_is_refused_and_creates_nothing(client, held_host, prefer):
    prediction_id = unfinished_prediction(client, held_host)
    got = client.get(f"/v1/predictions/{prediction_id}", headers={"Prefer": prefer})
    assert got.status_code == 422, got.text
    assert "must be a number of seconds from 0 to 60" in got.json()["detail"]
    before = len(client.get("/v1/predictions").json()["results"])
    body = {"input": {"prompt": "x", "input_image": f"{held_host}/photo.jpg"}}
    created = client.post("/v1/models/black-forest-labs/flux-kontext-dev/predictions", json=body,
                          headers={"Prefer": prefer})  # fmt: skip
    assert created.status_code == 422, created.text
    assert "Prefer: wait" in created.json()["detail"]
    assert len(client.get("/v1/predictions").json()["results"]) == before


def test_nan_waits_answer_at_once_while_real_long_polls_keep_their_time(client, held_host):
    prediction_id = unfinished_prediction(client, held_host)

    def poll(wait: str) -> tuple[int | str, float]:
        started = time.monotonic()
        try:
            status = client.get(f"/v1/prediction/{prediction_id}", params={"wait": wait}).status_code
        except httpx.TimeoutException:
            status = "stalled"  # no answer in 30 s: the event loop's timers are broken
        return status, time.monotonic() - started

    with ThreadPoolExecutor(13) as pool:
        fence = pool.submit(poll, "8")  # held 8 s: a bad wait held as a long poll would be answered after it
        real = [pool.submit(poll, seconds) for seconds in ("2", "3", "2", "3")]
        bad = [pool.submit(poll, "nan") for _ in range(6)]
        bad += [pool.submit(poll, "inf") for _ in range(2)]
        for future in bad:
            status, _ = future.result(timeout=20)
            assert status == 422 and not fence.done()  # answered at once: while a real long poll is still held
        assert fence.result(timeout=30)[0] == 200
        for future, asked in zip(real, (2, 3, 2, 3), strict=True):
            status, took = future.result(timeout=30)
            assert status == 200  # a stalled loop would have given "stalled" (no answer within the timeout)
            assert took > asked - 0.2  # held as asked, not cut short


def _status(client: httpx.Client, path: str) -> int | str:
    try:
        return client.get(path).status_code
    except httpx.TimeoutException:
        return "stalled"


def test_the_server_stops_promptly_on_sigterm_after_bad_waits(tmp_path, held_host):
    server = Server(tmp_path / "data", "--allow-network", "127.0.0.2/32").start()
    try:
        with server.client(timeout=20) as client:
            prediction_id = unfinished_prediction(client, held_host)
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda w: _status(client, f"/v1/prediction/{prediction_id}?wait={w}"),
                                        ["nan", "2", "nan", "inf", "3", "nan", "-inf", "1"]))  # fmt: skip
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail("the server ignored SIGTERM for 45 s")
        assert time.monotonic() - started < 30
        assert answers == [422, 200, 422, 422, 200, 422, 422, 200]
    finally:
        server.stop(signal.SIGKILL)


# ---- request bodies ------------------------------------------------------------------------


def send_chunked(port: int, path: str, content_type: str, head: bytes, total: int) -> tuple[int, int | None, dict]:
    """POST a chunked body of `total` bytes (`head`, then filler) as a client that keeps sending until it is
    answered. Returns the bytes sent, the answer's status (None when cut off without one) and its JSON."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    filler = b"a" * (256 * 1024)
    sent = 0
    try:
        sock.sendall(request.encode())
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the end
            piece = head if sent == 0 else filler
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, answer = read_answer(sock)
    sock.close()
    return sent, status, answer


def send_declared(port: int, path: str, content_type: str, length: int) -> tuple[int | None, dict]:
    """Send only the headers of a request declaring a `length`-byte body, and read the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())  # fmt: skip
    answer = read_answer(sock)
    sock.close()
    return answer


def read_answer(sock: socket.socket) -> tuple[int | None, dict]:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, {}
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, TimeoutError):
        return None, {}
    return int(head.split()[1]), json.loads(body)


JSON_HEAD = b'{"model": "flux-kontext-dev", "input": {"prompt": "'
BOUNDARY = "limit-test-boundary"
FILE_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
             "Content-Type: image/png\r\n\r\n").encode()  # fmt: skip
SLACK = 16 * MB  # what socket buffers hold between the client's count and the server's


def test_a_chunked_json_body_is_cut_off_just_past_the_limit(server):
    peak_before = rss_peak(server.process.pid)
    sent, status, answer = send_chunked(server.port, "/v1/prediction", "application/json", JSON_HEAD, 200 * MB)
    assert sent < 8 * MB + SLACK, f"the server read {sent / MB:.0f} MB of a body limited to 8 MB"
    assert status == 413, answer
    assert answer == {
        "error": "request body: is larger than 8 MB, the most for a JSON request (FLUXEDIT_MAX_JSON_BYTES)"
    }
    assert rss_peak(server.process.pid) - peak_before < 8 * MB * 3 + 48 * MB


def test_a_chunked_upload_is_cut_off_just_past_its_limit_in_each_dialect(server):
    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    sent, status, answer = send_chunked(server.port, "/v1/files", multipart, FILE_HEAD, 200 * MB)
    assert sent < 50 * MB + SLACK, f"the server read {sent / MB:.0f} MB of an upload limited to 50 MB"
    assert status == 413 and answer["error"].startswith("request body: is larger than 50.06 MB, the most for an image")
    image_head = FILE_HEAD.replace(b'name="file"', b'name="image"')
    sent, status, answer = send_chunked(server.port, "/v1/images/edits", multipart, image_head, 400 * MB)
    assert sent < 4 * 50 * MB + SLACK
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert answer["error"]["type"] == "invalid_request_error" and "200.2 MB" in answer["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/files", "/v1/loras", "/v1/images/edits"])
def test_a_urlencoded_body_keeps_the_json_limit_not_the_file_limit(server, path):
    # A form that is not multipart is read whole into memory: the big file limits are for multipart alone.
    sent, status, _ = send_chunked(server.port, path, "application/x-www-form-urlencoded", b"name=", 200 * MB)
    assert sent < 8 * MB + SLACK, f"the server read {sent / MB:.0f} MB of a urlencoded body to {path}"
    assert status in (400, 413)  # refused as not an upload, or as too large: either way, never read whole


def test_a_text_field_of_a_multipart_form_is_held_to_one_megabyte(server):
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n').encode()
    sent, status, answer = send_chunked(server.port, "/v1/loras", f"multipart/form-data; boundary={BOUNDARY}", head,
                                        200 * MB)  # fmt: skip
    assert sent < 8 * MB, f"the server read {sent / MB:.0f} MB of one text field"
    assert status == 400, answer  # "Part exceeded maximum size of 1024KB", answered while the rest still comes


@pytest.mark.parametrize(
    ("path", "content_type", "length", "shape"),
    [
        ("/v1/prediction", "application/json", 9 * MB, lambda a: a["error"]),
        ("/v1/predictions", "application/json", 9 * MB, lambda a: a["detail"]),
        ("/v1/files", f"multipart/form-data; boundary={BOUNDARY}", 51 * MB, lambda a: a["error"]),
        ("/v1/images/edits", f"multipart/form-data; boundary={BOUNDARY}", 201 * MB, lambda a: a["error"]["message"]),
        ("/v1/loras", f"multipart/form-data; boundary={BOUNDARY}", 3 * 1024 * MB, lambda a: a["error"]),
        ("/v1/trainings", f"multipart/form-data; boundary={BOUNDARY}", 3 * 1024 * MB, lambda a: a["error"]),
        ("/v1/trainings", "application/json", 9 * MB, lambda a: a["error"]),
    ],
)
def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_sent(server, path, content_type, length, shape):
    status, answer = send_declared(server.port, path, content_type, length)
    assert status == 413, answer
    assert "is larger than" in shape(answer)  # the endpoint's own check, or the body limit's


# ---- decoding ------------------------------------------------------------------------------


def flat_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A single-colour RGB PNG: a few hundred KB however large its picture (each row repeats the one above)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    rows = [compressor.compress(b"\x00" + bytes(rgb) * width)]
    repeat = b"\x02" + b"\x00" * (width * 3)  # filter "Up" with no difference: the row above again
    rows += [compressor.compress(repeat) for _ in range(height - 1)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"".join(rows) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def square_12000():
    return flat_png(12000, 12000, (200, 40, 40))


def test_a_12000_square_png_is_refused_from_its_header_in_each_dialect(server, client, square_12000):
    refusal = "is 12000x12000, more than 120,000,000 pixels"
    peak_before = rss_peak(server.process.pid)
    uploaded = client.post("/v1/files", files={"file": ("flat.png", square_12000)})
    assert uploaded.status_code == 422 and uploaded.json()["error"].startswith(f"file: {refusal}")
    uri = "data:image/png;base64," + base64.b64encode(square_12000).decode()
    seed = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": uri}})
    assert seed.status_code == 422 and seed.json()["error"].startswith(f"input.image_url: {refusal}")
    replicate = client.post("/v1/predictions", json={"version": "black-forest-labs/flux-kontext-dev",
                                                     "input": {"prompt": "x", "input_image": uri}})  # fmt: skip
    assert replicate.status_code == 422 and refusal in replicate.json()["detail"]
    edits = client.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("flat.png", square_12000)})
    assert edits.status_code == 400 and edits.json()["error"]["param"] == "image"
    assert refusal in edits.json()["error"]["message"]
    assert rss_peak(server.process.pid) - peak_before < 100 * MB  # refused before decoding (576 MB each)


def test_large_decodes_wait_their_turn_within_the_budget_and_health_answers_meanwhile(tmp_path):
    image = flat_png(5000, 5000, (30, 90, 200))
    each = estimated_decode_bytes(Image.open(io.BytesIO(image)))  # about 150 MB
    budget = 2 * each + MB  # two at a time
    env = {"FLUXEDIT_DECODE_MEMORY_BYTES": str(budget), "FLUXEDIT_DECODE_CONCURRENCY": "4"}
    with Server(tmp_path / "data", env=env) as server, server.client(timeout=120) as client:
        peak_before = rss_peak(server.process.pid)
        with ThreadPoolExecutor(5) as pool:
            uploads = [pool.submit(upload, client, image, f"big-{i}.png") for i in range(5)]
            health_times = []
            while not all(future.done() for future in uploads):
                started = time.monotonic()
                assert httpx.get(server.url + "/health", timeout=10).status_code == 200
                health_times.append(time.monotonic() - started)
                time.sleep(0.05)
            records = [future.result() for future in uploads]
        assert all((record["width"], record["height"]) == (5000, 5000) for record in records)
        assert health_times and max(health_times) < 2.0, health_times  # generous: the loop is never blocked
        growth = rss_peak(server.process.pid) - peak_before
        assert growth < budget + 100 * MB, f"decoding 5 images took {growth / MB:.0f} MB at the peak"
