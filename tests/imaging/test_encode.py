import io

import pytest
from PIL import Image

from fluxedit.imaging.encode import encode_image, read_metadata
from fluxedit.schema import OutputFormat
from tests.helpers import pattern

METADATA = {"prompt": "écris « bonjour » on the sign", "seed": 2**64 - 1, "num_inference_steps": 28}


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_settings_travel_inside_every_format(fmt):
    data = encode_image(pattern(64, 48), fmt, 90, METADATA)
    assert Image.open(io.BytesIO(data)).format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt.value]
    assert read_metadata(data) == METADATA


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_metadata_can_be_left_out(fmt):
    assert read_metadata(encode_image(pattern(64, 48), fmt, 90, None)) is None


def test_quality_changes_lossy_output_size():
    picture = pattern(256, 256)
    assert len(encode_image(picture, OutputFormat.jpeg, 30)) < len(encode_image(picture, OutputFormat.jpeg, 95))
    assert len(encode_image(picture, OutputFormat.webp, 30)) < len(encode_image(picture, OutputFormat.webp, 95))


def test_png_is_lossless():
    picture = pattern(64, 64)
    decoded = Image.open(io.BytesIO(encode_image(picture, OutputFormat.png, 90, METADATA)))
    assert list(decoded.convert("RGB").getdata()) == list(picture.getdata())
