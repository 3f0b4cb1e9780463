"""How an image or zip argument is read: remote forms as they are, base64 decoded, local paths over stdio only."""

from __future__ import annotations

import base64

import pytest

from fluxedit.mcp.arguments import image_argument, zip_argument
from fluxedit.schema import InputError
from tests.mcp.helpers import photo_png


def test_remote_forms_pass_through():
    for value in ("https://example.com/a.png", "data:image/png;base64,AAAA", "file_abcdefghijklmnop"):
        assert image_argument(value, "image", local_files=False) == value


@pytest.mark.parametrize("local", [False, True])
def test_base64_is_decoded_standard_or_urlsafe(local):
    data = photo_png()
    assert image_argument(base64.b64encode(data).decode(), "image", local) == data
    assert image_argument(base64.urlsafe_b64encode(data).decode().rstrip("="), "image", local) == data


def test_a_local_file_only_over_stdio(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(photo_png())
    assert image_argument(str(photo), "image", local_files=True) == photo
    with pytest.raises(InputError, match=r"^references\[0\]: .*only by the local \(stdio\) server"):
        image_argument(str(photo), "references[0]", local_files=False)
    with pytest.raises(InputError, match="is not a file"):
        image_argument(str(tmp_path), "image", local_files=True)
    with pytest.raises(InputError, match="no such file"):
        image_argument(str(tmp_path / "gone.png"), "image", local_files=True)


def test_a_training_zip_is_a_url_or_a_local_file(tmp_path):
    archive = tmp_path / "pairs.zip"
    archive.write_bytes(b"PK")
    assert zip_argument("https://example.com/pairs.zip", "data", local_files=False) == "https://example.com/pairs.zip"
    assert zip_argument(str(archive), "data", local_files=True) == archive
    with pytest.raises(InputError, match="http"):
        zip_argument(str(archive), "data", local_files=False)
