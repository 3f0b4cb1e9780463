"""Masks (input.mask_url) through a real server: stored in one greyscale form, handed to the job, checked against
the main image's size at create (data URIs, uploads) or once a URL is fetched; empty refused, full the plain edit.
Also output_resolution and strength as inputs, and their limits."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from fluxedit.imaging.composite import feather_width
from fluxedit.imaging.crop import crop_box
from fluxedit.resolution import output_size
from fluxedit.service.jobs import edit_job
from fluxedit.service.pricing import settled_cost
from fluxedit.store.database import open_database
from fluxedit.store.models import Prediction, StoredFile
from tests.helpers import encoded, pattern, png_bomb
from tests.service.server import Server, create, upload, wait_done

WIDTH, HEIGHT = 96, 64
PHOTO = encoded(pattern(WIDTH, HEIGHT), "PNG")


def grey_mask(width: int = WIDTH, height: int = HEIGHT, box=(0, 0, 32, 32), level: int = 255) -> np.ndarray:
    values = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    values[top:bottom, left:right] = level
    return values


def png(values: np.ndarray, mode: str = "L") -> bytes:
    return encoded(Image.fromarray(values, mode), "PNG")


def data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


CORNER = grey_mask()
CORNER_MASK = png(CORNER)


class Host(BaseHTTPRequestHandler):
    """Serves the bytes put in `files` by path; anything else is a 404."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        data = Host.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def host():
    served = ThreadingHTTPServer(("127.0.0.2", 0), Host)
    threading.Thread(target=served.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{served.server_address[1]}"
    served.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("masks") / "data", "--allow-network", "127.0.0.2/32") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def sessions(server):
    return open_database(f"sqlite:///{server.data_dir / 'fluxedit.db'}")


class Records:
    """The file records a job is built from, read from the server's database (edit_job needs only get)."""

    def __init__(self, sessions):
        self.sessions = sessions

    def get(self, file_id: str) -> StoredFile | None:
        with self.sessions() as session:
            return session.get(StoredFile, file_id)


def job_of(sessions, prediction_id: str):
    with sessions() as session:
        row = session.get(Prediction, prediction_id)
        session.expunge(row)
    return edit_job(row, Records(sessions))


def picture(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def refused(client, **input_fields) -> str:
    body = {"input": {"prompt": "make it blue", "image_url": data_uri(PHOTO), **input_fields}}
    response = client.post("/v1/prediction", json=body)
    assert response.status_code == 422, response.text
    return response.json()["error"]


def test_a_data_uri_mask_is_stored_greyscale_and_reaches_the_job(client, sessions):
    prediction_id = create(client, image_url=data_uri(PHOTO), mask_url=data_uri(CORNER_MASK), strength=0.5)
    done = wait_done(client, prediction_id)
    assert done["status"] == "success", done
    assert done["input"]["mask_url"].endswith("/content") and done["input"]["strength"] == 0.5
    stored = picture(client, done["input"]["mask_url"])  # shown as the file it was kept as, never the data URI
    assert stored.mode == "L" and stored.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(stored), CORNER)
    job = job_of(sessions, prediction_id)
    assert job.mask is not None and job.mask.field == "input.mask_url"
    assert job.mask.id in done["input"]["mask_url"] and len(job.images) == 1
    assert job.settings["strength"] == 0.5


def test_an_rgba_mask_counts_by_its_alpha(client, sessions):
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., :3] = 200  # a colour that says nothing: with transparency, only the alpha counts
    rgba[..., 3] = CORNER
    done = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=data_uri(png(rgba, "RGBA"))))
    assert done["status"] == "success", done
    assert np.array_equal(np.asarray(picture(client, done["input"]["mask_url"])), CORNER)
    assert job_of(sessions, done["id"]).mask is not None


def test_an_uploaded_mask_by_file_id(client, sessions):
    mask = upload(client, CORNER_MASK, "mask.png")
    done = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=mask["id"]))
    assert done["status"] == "success", done
    assert done["input"]["mask_url"] == mask["id"]  # as it was sent
    job = job_of(sessions, done["id"])
    with sessions() as session:
        assert session.get(StoredFile, job.mask.id).content_type == "image/png"


def test_a_mask_of_another_size_is_refused_naming_both_sizes(client):
    error = refused(client, mask_url=data_uri(png(grey_mask(WIDTH + 1, HEIGHT))))
    assert error.startswith("input.mask_url: is 97x64 but the image to edit (input.image_url) is 96x64")


def test_the_main_images_exif_orientation_counts(client):
    rotated = Image.open(io.BytesIO(PHOTO)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: upright it is 64 x 96
    jpeg = encoded(rotated, "JPEG", exif=exif.tobytes())
    error = refused(client, image_url=data_uri(jpeg, "image/jpeg"), mask_url=data_uri(CORNER_MASK))
    assert "is 96x64 but the image to edit (input.image_url) is 64x96" in error
    upright = wait_done(client, create(client, image_url=data_uri(jpeg, "image/jpeg"),
                                       mask_url=data_uri(png(grey_mask(HEIGHT, WIDTH)))))  # fmt: skip
    assert upright["status"] == "success", upright


def test_an_empty_mask_is_refused(client):
    assert refused(client, mask_url=data_uri(png(grey_mask(level=0)))).startswith(
        "input.mask_url: marks nothing to edit (no pixel is white or opaque)"
    )
    faint = refused(client, mask_url=data_uri(png(grey_mask(level=100))))  # under half white: not editable
    assert faint.startswith("input.mask_url: marks nothing to edit")


def test_a_full_mask_is_the_plain_edit(client, sessions):
    full = data_uri(png(np.full((HEIGHT, WIDTH), 255, np.uint8)))
    masked = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=full, seed=5))
    plain = wait_done(client, create(client, image_url=data_uri(PHOTO), seed=5))
    assert masked["status"] == plain["status"] == "success"
    assert job_of(sessions, masked["id"]).mask is None
    assert client.get(masked["output"][0]).content == client.get(plain["output"][0]).content


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (data_uri(b"not an image at all"), "input.mask_url: is not an image"),
        ("data:image/png;base64,", "input.mask_url: is an empty data URI"),
        ("ftp://example.com/mask.png", "input.mask_url: "),
        ("file_" + "A" * 22, "input.mask_url: file_AAAAAAAAAAAAAAAAAAAAAA not found"),
        ("", "input.mask_url: must not be empty"),
    ],
)
def test_bad_masks_are_refused_naming_the_field(client, mask, message):
    assert refused(client, mask_url=mask).startswith(message)


def test_a_mask_url_of_the_wrong_size_fails_the_prediction_once_fetched(client, host):
    Host.files["/small-mask.png"] = png(grey_mask(48, 32, (0, 0, 8, 8)))
    failed = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=f"{host}/small-mask.png"))
    assert failed["status"] == "error" and failed["output"]["error_code"] == "INPUT_VALIDATION_ERROR"
    assert failed["output"]["error_message"].startswith("input.mask_url: is 48x32 but the image to edit")


def test_a_mask_url_is_fetched_and_used(client, host, sessions):
    Host.files["/mask.png"] = CORNER_MASK
    Host.files["/photo.png"] = PHOTO
    done = wait_done(client, create(client, image_url=f"{host}/photo.png", mask_url=f"{host}/mask.png"))
    assert done["status"] == "success", done
    assert done["input"]["mask_url"] == f"{host}/mask.png"
    job = job_of(sessions, done["id"])
    assert job.mask is not None and len(job.images) == 1


def test_an_image_url_whose_size_differs_from_an_inline_mask_fails_clearly(client, host):
    Host.files["/photo.png"] = PHOTO
    failed = wait_done(client, create(client, image_url=f"{host}/photo.png",
                                      mask_url=data_uri(png(grey_mask(64, 64)))))  # fmt: skip
    assert failed["status"] == "error"
    assert failed["output"]["error_message"].startswith("input.mask_url: is 64x64 but the image to edit")


def test_an_empty_mask_url_fails_the_prediction(client, host):
    Host.files["/empty.png"] = png(grey_mask(level=0))
    failed = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=f"{host}/empty.png"))
    assert failed["status"] == "error"
    assert failed["output"]["error_message"].startswith("input.mask_url: marks nothing to edit")


def test_output_resolution_and_strength_are_inputs_with_limits(client):
    assert refused(client, output_resolution="huge").startswith("input.output_resolution: must be one of model, input")
    assert refused(client, strength=1.5).startswith("input.strength: must be at most 1")
    done = wait_done(client, create(client, image_url=data_uri(PHOTO), output_resolution="input"))
    assert done["status"] == "success" and done["input"]["output_resolution"] == "input"


def test_output_resolution_input_is_refused_past_40_megapixels(client):
    big = data_uri(png_bomb(8000, 5001))  # 40,008,000 pixels, a few kilobytes
    error = refused(client, image_url=big, output_resolution="input")
    assert error.startswith("input.output_resolution: ") and "8000x5001" in error and "40" in error


def test_the_price_counts_what_the_model_generates(client):
    full_size = wait_done(client, create(client, image_url=data_uri(PHOTO), output_resolution="input"))
    model_size = wait_done(client, create(client, image_url=data_uri(PHOTO)))
    assert full_size["metrics"]["cost"] == model_size["metrics"]["cost"]


def test_a_batch_template_takes_no_mask(client):
    response = client.post("/v1/batches", json={"input": {"prompt": "x", "mask_url": data_uri(CORNER_MASK)},
                                                "images": [data_uri(PHOTO)]})  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("input.mask_url: is not taken by a batch")


def test_a_result_is_priced_by_the_size_the_model_generated():
    """The crop path edits at the crop's own Kontext size: the price follows the megapixel units it made."""
    assert settled_cost(0.025, (1184, 880), (0, 0)) == 0.025  # not reported: as priced
    assert settled_cost(0.025, (1184, 880), (1024, 1024)) == 0.025  # one unit either way
    assert settled_cost(0.05, (1184, 880), (672, 1568)) == 0.1  # 1,053,696 pixels: two units


def large_photo(width: int = 3000, height: int = 2000) -> Image.Image:
    """A picture with structure at every pixel (gradients and a fine checkerboard) that compresses well."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((x // 7 + y // 5) % 2 * 40)[..., None]
    base = np.stack([x * 200 // (width - 1), y * 200 // (height - 1), (x + y) % 200], axis=-1)
    return Image.fromarray((base + checker).astype(np.uint8), "RGB")


def test_a_full_resolution_masked_edit_keeps_every_pixel_outside_the_mask_and_its_feather(client):
    """The issue's test: a 3000x2000 input, a mask on one corner, output_resolution input: the result is 3000x2000
    and every pixel farther than the feather from the mask is the input's, byte for byte. The corner is a small
    region of a large picture, so the engine edits a crop around it at the model's full size."""
    original = large_photo()
    width, height = original.size
    corner = (0, 0, 200, 200)
    image = upload(client, encoded(original, "PNG"), "large.png")
    mask = upload(client, png(grey_mask(width, height, corner)), "corner.png")
    done = wait_done(client, create(client, image_url=image["id"], mask_url=mask["id"], output_resolution="input",
                                    output_format="png", seed=3), timeout=300)  # fmt: skip
    assert done["status"] == "success", done
    result = picture(client, done["output"][0])
    assert result.format == "PNG" and result.size == (width, height)
    pixels, source = np.asarray(result.convert("RGB")), np.asarray(original)
    reach = corner[2] + feather_width(width, height)  # the mask is a square at the origin: its feather ends here
    assert np.array_equal(pixels[:, reach:], source[:, reach:]) and np.array_equal(pixels[reach:], source[reach:])
    assert not np.array_equal(pixels[: corner[3], : corner[2]], source[: corner[3], : corner[2]])  # it was edited
    left, top, right, bottom = crop_box((width, height), corner)
    assert f"edited a crop {right - left}x{bottom - top} at ({left}, {top})" in done["logs"]  # the crop path
    assert f"laid onto the {width}x{height} input" in done["logs"]


def test_a_masked_edit_at_the_model_resolution_returns_the_model_size(client):
    done = wait_done(client, create(client, image_url=data_uri(PHOTO), mask_url=data_uri(CORNER_MASK), seed=3))
    assert done["status"] == "success", done
    assert picture(client, done["output"][0]).size == output_size("match_input", WIDTH, HEIGHT) != (WIDTH, HEIGHT)
    assert "edited a crop" not in done["logs"]
