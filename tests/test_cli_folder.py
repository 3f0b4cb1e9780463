"""`fluxedit edit FOLDER`: every image of a folder, here or on a server, resumable (tiny model, 1 step)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fluxedit.imaging.encode import read_metadata
from tests.helpers import encoded, pattern
from tests.service.server import Server

FLUXEDIT = shutil.which("fluxedit") or str(Path(sys.executable).with_name("fluxedit"))


def fluxedit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FLUXEDIT, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three images of three formats and shapes, and a file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "shoe.jpg").write_bytes(encoded(pattern(640, 480, seed=1), "JPEG"))
    (folder / "bag.png").write_bytes(encoded(pattern(480, 640, seed=2), "PNG"))
    (folder / "hat.webp").write_bytes(encoded(pattern(300, 300, seed=3), "WEBP"))
    (folder / "notes.txt").write_text("prices to check")
    return folder


# What each input becomes: the name (and so the format) of the input, the size its aspect snaps to.
EXPECTED = {"shoe.jpg": ("JPEG", (1184, 880)), "bag.png": ("PNG", (880, 1184)), "hat.webp": ("WEBP", (1024, 1024))}


def assert_outputs(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)  # nothing for notes.txt, no partial files
    for name, (fmt, size) in EXPECTED.items():
        with Image.open(out / name) as picture:
            assert (picture.format, picture.size) == (fmt, size), name
        assert read_metadata((out / name).read_bytes())["prompt"] == "make it blue"


def test_a_folder_is_edited_image_by_image_and_a_second_run_skips_them_all(photos, tmp_path):
    result = fluxedit("edit", "photos", "-p", "make it blue", "--model", "tiny", "--steps", "1", "-o", "out",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_outputs(tmp_path / "out")
    assert "skipped notes.txt: not a JPEG, PNG or WebP image" in result.stderr
    assert "wrote out/shoe.jpg (1184x880, seed " in result.stderr
    assert "3/3" in result.stderr and "0 failed" in result.stderr and "images/min" in result.stderr  # the bar
    assert "edited 3, failed 0, skipped 0" in result.stderr
    written = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").iterdir()}

    again = fluxedit("edit", "photos", "-p", "make it blue", "--model", "tiny", "--steps", "1", "-o", "out",
                     cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "3 already done in out (skipped), 0 to edit" in again.stderr
    assert "edited 0, failed 0, skipped 3" in again.stderr
    assert "model tiny" not in again.stderr  # nothing to do: the model is not even loaded
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").iterdir()} == written


def test_a_failed_image_is_reported_the_others_go_on_and_the_next_run_does_only_what_is_left(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(encoded(pattern(200, 200, seed=4), "PNG"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not the rest of a JPEG")
    args = ("edit", "photos", "-p", "make it blue", "--model", "tiny", "--steps", "1", "-o", "out",
            "--num-images", "2", "--format", "webp", "--resolution-mode", "1:1")  # fmt: skip

    result = fluxedit(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # one failed: the exit code says so
    assert "failed broken.jpg: " in result.stderr and "is not an image" in result.stderr
    assert "edited 1, failed 1" in result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["good-1.webp", "good-2.webp"]  # --format names them
    for name in ("good-1.webp", "good-2.webp"):
        with Image.open(out / name) as picture:
            assert (picture.format, picture.size) == ("WEBP", (1024, 1024))

    # The broken image replaced by a real one, and one of good's outputs gone: both are done again, nothing else.
    (folder / "broken.jpg").write_bytes(encoded(pattern(200, 200, seed=5), "JPEG"))
    (out / "good-2.webp").unlink()
    kept = (out / "good-1.webp").read_bytes()
    again = fluxedit(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 images in photos" in again.stderr and "edited 2, failed 0, skipped 0" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["broken-1.webp", "broken-2.webp", "good-1.webp", "good-2.webp"]
    assert (out / "good-1.webp").read_bytes() != kept  # good was edited again (a new random seed), as a whole


def test_folders_that_cannot_work_are_refused_before_anything_loads(photos, tmp_path):
    same = fluxedit("edit", "photos", "-p", "make it blue", "--model", "tiny", "-o", "photos", cwd=tmp_path)
    assert same.returncode == 2 and "is the input folder" in same.stderr

    (photos / "shoe.png").write_bytes(encoded(pattern(64, 64), "PNG"))  # shoe.jpg and shoe.png: both out/shoe.png
    clash = fluxedit("edit", "photos", "-p", "make it blue", "--model", "tiny", "--format", "png", "-o", "out",
                     cwd=tmp_path)  # fmt: skip
    assert clash.returncode == 2 and "shoe.jpg and shoe.png would both be written to out/shoe.png" in clash.stderr

    refs = fluxedit("edit", "photos", "photos/shoe.jpg", "-p", "make it blue", "--model", "tiny", cwd=tmp_path)
    assert refs.returncode == 2 and "give the folder alone" in refs.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "photos-edited").exists()


def test_a_folder_edited_on_a_server_as_one_batch_with_the_key(photos, tmp_path):
    data = tmp_path / "data"
    created = subprocess.run([FLUXEDIT, "keys", "create", "cli", "--data-dir", str(data)],
                             capture_output=True, text=True, check=True)  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    args = ("edit", "photos", "-p", "make it blue", "--steps", "1", "-o", "out")
    with Server(data) as server:
        refused = fluxedit(*args, "--server", server.url, "--api-key", "fxe_wrong", cwd=tmp_path)
        assert refused.returncode == 1 and "the server refused the batch: " in refused.stderr, refused.stderr
        assert not (tmp_path / "out").exists()

        result = fluxedit(*args, "--server", server.url, cwd=tmp_path, env={**os.environ, "FLUXEDIT_API_KEY": key})
        assert result.returncode == 0, result.stderr + server.log()
        assert_outputs(tmp_path / "out")
        assert "batch batch_" in result.stderr and ": 3 images on " in result.stderr and "3/3" in result.stderr
        assert "skipped notes.txt: not a JPEG, PNG or WebP image" in result.stderr

        (tmp_path / "out" / "bag.png").unlink()
        again = fluxedit(*args, "--server", server.url, "--api-key", key, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "2 already done in out (skipped), 1 to edit" in again.stderr and ": 1 image on " in again.stderr
        assert "edited 1, failed 0, skipped 2" in again.stderr
        assert_outputs(tmp_path / "out")
