"""Images in: uploads, data URIs, fetched URLs and the service's own outputs, with every limit."""

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import encoded, pattern, png_bomb
from tests.service.server import Server, create, upload, wait_done

PHOTO = encoded(pattern(640, 480), "JPEG")


class ImageHost(BaseHTTPRequestHandler):
    """Serves /photo.jpg, a 404, and a redirect to an address given in the path."""

    def do_GET(self):
        if self.path == "/photo.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)
        elif self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/redirect-to/"))
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


def serve_on(address: str) -> ThreadingHTTPServer:
    host = ThreadingHTTPServer((address, 0), ImageHost)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    return host


@pytest.fixture(scope="module")
def image_hosts():
    hosts = {"allowed": serve_on("127.0.0.2"), "loopback": serve_on("127.0.0.1")}
    yield {name: f"http://{h.server_address[0]}:{h.server_address[1]}" for name, h in hosts.items()}
    for host in hosts.values():
        host.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Only 127.0.0.2 may be fetched: loopback (127.0.0.1) stays refused, as on a real server.
    data = tmp_path_factory.mktemp("inputs") / "data"
    with Server(data, "--allow-network", "127.0.0.2/32") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


def test_upload_answers_an_id_and_url_to_use_as_image_url(client):
    record = upload(client, PHOTO, "holiday.jpg")
    assert record["id"].startswith("file_") and record["content_type"] == "image/jpeg"
    assert (record["width"], record["height"], record["size"]) == (640, 480, len(PHOTO))
    assert client.get(record["urls"]["content"]).content == PHOTO
    by_url = wait_done(client, create(client, image_url=record["url"]))
    assert by_url["status"] == "success" and by_url["output"][0].endswith(".jpg")


def test_an_upload_over_50_mb_is_refused(client):
    response = client.post("/v1/files", files={"file": ("huge.png", b"\0" * (51 * 1024 * 1024))})
    assert response.status_code == 413
    assert response.json() == {"error": "file: is larger than 50 MB"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (png_bomb(13000, 12000), "file: is 13000x12000, more than 120,000,000 pixels"),
        (encoded(pattern(64, 64), "GIF"), "file: is a GIF image; only JPEG, PNG and WebP are accepted"),
        (PHOTO[: len(PHOTO) // 2], "file: could not be read as JPEG"),
        (b"<html>not an image</html>", "file: is not an image"),
    ],
)
def test_unusable_uploads_are_refused_with_the_reason(client, data, message):
    response = client.post("/v1/files", files={"file": ("input.png", data)})
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)


def test_data_uri_input(client):
    uri = "data:image/png;base64," + base64.b64encode(encoded(pattern(300, 300), "PNG")).decode()
    prediction = wait_done(client, create(client, image_url=uri, num_inference_steps=1))
    assert prediction["status"] == "success" and (prediction["width"], prediction["height"]) == (1024, 1024)


def test_a_gif_data_uri_is_refused_at_creation(client):
    uri = "data:image/gif;base64," + base64.b64encode(encoded(pattern(64, 64), "GIF")).decode()
    response = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": uri}})
    assert response.status_code == 422
    assert "input.image_url: is a GIF image" in response.json()["error"]


def test_an_allowed_url_is_fetched(client, image_hosts):
    prediction = wait_done(client, create(client, image_url=image_hosts["allowed"] + "/photo.jpg"))
    assert prediction["status"] == "success" and (prediction["width"], prediction["height"]) == (1184, 880)


def test_a_loopback_url_is_refused(client, image_hosts):
    prediction = wait_done(client, create(client, image_url=image_hosts["loopback"] + "/photo.jpg"))
    assert prediction["status"] == "error"
    assert prediction["output"]["error_code"] == "INPUT_VALIDATION_ERROR"
    assert "a loopback/private address this server does not fetch" in prediction["output"]["error_message"]


def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(client, image_hosts):
    loopback = image_hosts["loopback"].removeprefix("http://")
    url = f"{image_hosts['allowed']}/redirect-to/{loopback}/photo.jpg"
    prediction = wait_done(client, create(client, image_url=url))
    assert prediction["status"] == "error"
    assert "127.0.0.1" in prediction["output"]["error_message"]


def test_a_missing_remote_image_is_a_download_error(client, image_hosts):
    prediction = wait_done(client, create(client, image_url=image_hosts["allowed"] + "/missing.jpg"))
    assert prediction["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert "HTTP 404" in prediction["output"]["error_message"]


def test_an_output_is_the_next_edits_input_without_any_fetch(client):
    first = wait_done(client, create(client, image_url=upload(client, PHOTO)["id"], num_inference_steps=1))
    # Its URL is on 127.0.0.1, which this server refuses to fetch: it is resolved internally instead.
    second = wait_done(client, create(client, image_url=first["output"][0], prompt="now add a hat"))
    assert second["status"] == "success", second["output"]
    third = wait_done(client, create(client, image_url=second["output"][0], prompt="and a scarf"))
    assert third["status"] == "success"


def test_several_reference_images(client):
    main, style = upload(client, PHOTO)["id"], upload(client, encoded(pattern(400, 400, seed=5), "PNG"))["id"]
    prediction = wait_done(client, create(client, image_url=main, image_urls=[style, style], num_inference_steps=1))
    assert prediction["status"] == "success"
    response = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": main,
                                                              "image_urls": [style] * 4}})  # fmt: skip
    assert response.status_code == 422 and "input.image_urls: must have at most 3 items" in response.json()["error"]
