"""`fluxedit edit` options the README documents: --acceleration reaches the engine, --no-metadata leaves the
settings out of the file (and nothing else)."""

from __future__ import annotations

from PIL import Image

from fluxedit.imaging.encode import read_metadata
from tests.helpers import encoded, pattern
from tests.test_cli import fluxedit


def test_acceleration_and_no_metadata(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(encoded(pattern(320, 240), "PNG"))

    said: dict[str, str] = {}

    def edit(name: str, *extra: str) -> bytes:
        result = fluxedit("edit", str(photo), "-p", "make it blue", "--model", "tiny", "--steps", "8", "--seed", "3",
                          "-o", name, *extra, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        said[name] = result.stderr
        return (tmp_path / name).read_bytes()

    plain = edit("plain.png")
    edit("regular.png", "--acceleration", "regular")
    assert "8 steps, 8 transformer passes (acceleration none)" in said["plain.png"]
    assert "8 steps, 5 transformer passes (acceleration regular)" in said["regular.png"]
    pixels = {name: Image.open(tmp_path / name).tobytes() for name in ("plain.png", "regular.png")}
    assert pixels["plain.png"] != pixels["regular.png"]  # skipped steps are extrapolated: another image

    bare = edit("bare.png", "--no-metadata")
    assert read_metadata(bare) is None and read_metadata(plain)["seed"] == 3
    assert Image.open(tmp_path / "bare.png").tobytes() == pixels["plain.png"]  # only the metadata is left out
