"""Decoding is bounded: the pixel limit and the memory budget are checked from the header, decodes wait their
turn within the budget, and large pictures are kept at the size the model needs, with the same resolution choices."""

import asyncio
import itertools
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fluxedit.config import Settings
from fluxedit.imaging.decode import configure_decoding, decode_image, decode_image_async, decoding_limits
from fluxedit.imaging.decode_budget import DecodeBudget
from fluxedit.imaging.model_size import MODEL_PIXELS, model_size
from fluxedit.resolution import RESOLUTION_MODES, nearest_preferred_size, output_size
from fluxedit.schema import InputError
from tests.helpers import encoded, pattern


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG that declares width x height but holds no pixel data: decoding it would fail, reading its header not."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def limits():
    """Lets a test set the process's decode limits; the settings' defaults come back after it."""
    yield configure_decoding
    defaults = Settings()
    configure_decoding(defaults.max_input_pixels, defaults.decode_memory_bytes, defaults.decode_concurrency)


def test_defaults_come_from_the_settings():
    assert decoding_limits().max_pixels == 120_000_000
    assert decoding_limits().memory_bytes == 1024**3 and decoding_limits().concurrency == 2


def test_the_12000_square_png_is_refused_from_its_header_naming_the_field_and_the_limit():
    with pytest.raises(InputError, match=r"^image_url: is 12000x12000, more than 120,000,000 pixels"):
        decode_image(png_header_only(12000, 12000), field="image_url")


def test_the_pixel_limit_is_a_setting(limits):
    limits(1_000_000, 1024**3, 2)
    with pytest.raises(InputError, match=r"is 1200x1000, more than 1,000,000 pixels"):
        decode_image(encoded(pattern(1200, 1000), "PNG"))
    assert decode_image(encoded(pattern(1000, 1000), "PNG")).image.size == (1000, 1000)


def test_the_limits_are_read_from_the_environment_by_any_process():
    code = "from fluxedit.imaging.decode import decoding_limits as d; print(d().max_pixels, d().memory_bytes)"
    env = {"FLUXEDIT_MAX_INPUT_PIXELS": "5000000", "FLUXEDIT_DECODE_MEMORY_BYTES": "300000000", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["5000000", "300000000"]


def test_an_image_that_alone_needs_more_than_the_budget_is_refused_before_decoding(limits):
    limits(120_000_000, 64 * 2**20, 2)
    with pytest.raises(InputError, match=r"^image: is 6000x4000: decoding it takes about \d+ MB, more than the 64 MB"):
        decode_image(png_header_only(6000, 4000))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_within_a_small_budget(limits):
    limits(120_000_000, 64 * 2**20, 2)  # 8000x6000 would take 192 MB decoded in full
    photo = encoded(Image.new("RGB", (8000, 6000), (200, 40, 40)), "JPEG", quality=80)
    decoded = decode_image(photo)
    assert decoded.original_size == (8000, 6000)
    assert decoded.image.width * decoded.image.height <= MODEL_PIXELS * 1.1


def test_downscaled_sizes_keep_every_resolution_choice_of_the_original():
    sides = [1449, 2000, 3001, 4032, 6000, 7777, 9000, 12000]
    for width, height in itertools.product(sides, sides):
        if max(width, height) / min(width, height) > 4 or width * height <= MODEL_PIXELS:
            continue
        kept = model_size(width, height)
        assert kept is not None and kept[0] * kept[1] <= MODEL_PIXELS * 4
        assert nearest_preferred_size(*kept) == nearest_preferred_size(width, height)
        for mode in RESOLUTION_MODES:
            assert output_size(mode, *kept) == output_size(mode, width, height)
    assert model_size(1024, 1024) is None and model_size(1448, 1448) is None  # at most 2 MP: kept as it is


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_a_large_picture_is_kept_at_about_two_megapixels_with_its_look(fmt):
    picture = pattern(1800, 1200)
    decoded = decode_image(encoded(picture, fmt, quality=95) if fmt != "PNG" else encoded(picture, fmt))
    assert decoded.original_size == (1800, 1200)
    assert decoded.image.size == model_size(1800, 1200) and decoded.image.mode == "RGB"
    expected = np.asarray(picture.resize(decoded.image.size, Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(np.asarray(decoded.image, dtype=int) - expected).mean() < 6


def test_a_large_sideways_jpeg_is_turned_upright_and_downscaled():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    picture = pattern(1800, 1200)
    decoded = decode_image(encoded(picture, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.original_size == (1200, 1800)
    assert decoded.image.size == model_size(1200, 1800)
    upright = picture.transpose(Image.Transpose.ROTATE_270).resize(decoded.image.size, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(decoded.image, dtype=int) - np.asarray(upright, dtype=int)).mean() < 8


def test_large_palette_sixteen_bit_and_cmyk_pictures_are_downscaled_with_their_colours():
    palette = Image.new("P", (1800, 1200), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.paste(0, (0, 0, 400, 400))  # a transparent corner
    decoded = decode_image(encoded(palette, "PNG", transparency=0)).image
    assert decoded.getpixel((10, 10)) == (255, 255, 255) and decoded.getpixel((1000, 1000)) == (0, 200, 0)
    grey16 = decode_image(encoded(Image.fromarray(np.full((1200, 1800), 0x8000, dtype=np.uint16)), "PNG")).image
    assert grey16.size == model_size(1800, 1200) and grey16.getpixel((100, 100)) == (128, 128, 128)
    cmyk = decode_image(encoded(Image.new("CMYK", (1800, 1200), (0, 255, 255, 0)), "JPEG", quality=100)).image
    red, green, blue = cmyk.getpixel((500, 500))
    assert cmyk.size == model_size(1800, 1200) and red > 200 and green < 60 and blue < 60


def test_the_async_decode_gives_the_same_picture():
    data = encoded(pattern(1800, 1200), "PNG")
    decoded = asyncio.run(decode_image_async(data, "file"))
    assert np.array_equal(np.asarray(decoded.image), np.asarray(decode_image(data, "file").image))
    with pytest.raises(InputError, match=r"^file: is not an image"):
        asyncio.run(decode_image_async(b"text", "file"))


# ---- the budget ----------------------------------------------------------------------------


def _hold(budget: DecodeBudget, cost: int, events: list, name: str, release: threading.Event) -> threading.Thread:
    def run():
        with budget.admitted(cost):
            events.append(name)
            release.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_decodes_wait_for_memory_and_slots_first_come_first_served():
    budget = DecodeBudget(memory_bytes=100, slots=2)
    events, releases = [], {name: threading.Event() for name in "abcd"}
    a = _hold(budget, 60, events, "a", releases["a"])
    _wait_until(lambda: events == ["a"])
    b = _hold(budget, 100, events, "b", releases["b"])  # needs everything: waits for a
    _wait_until(lambda: len(budget._turns) == 1)
    c = _hold(budget, 10, events, "c", releases["c"])  # would fit beside a, but b came first
    _wait_until(lambda: len(budget._turns) == 2)
    assert events == ["a"] and budget.in_use() == (1, 60)
    releases["a"].set()
    _wait_until(lambda: events == ["a", "b"])
    assert budget.in_use() == (1, 100)
    releases["b"].set()
    _wait_until(lambda: events == ["a", "b", "c"])
    d = _hold(budget, 10, events, "d", releases["d"])
    _wait_until(lambda: events == ["a", "b", "c", "d"])
    assert budget.in_use() == (2, 20)
    e_events, e_release = [], threading.Event()
    e = _hold(budget, 1, e_events, "e", e_release)  # no slot left: two decodes run
    time.sleep(0.05)
    assert e_events == []
    releases["c"].set()
    _wait_until(lambda: e_events == ["e"])
    for event in (*releases.values(), e_release):
        event.set()
    for thread in (a, b, c, d, e):
        thread.join(5)
    assert budget.in_use() == (0, 0)


def test_a_cost_larger_than_the_budget_is_admitted_alone_rather_than_never():
    budget = DecodeBudget(memory_bytes=100, slots=2)
    with budget.admitted(500):
        assert budget.in_use() == (1, 100)
    assert budget.in_use() == (0, 0)
