"""Several images at once on the playground: one batch, a grid that fills in as results arrive, a zip of them all."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path

from PIL import Image

from tests.web.conftest import open_playground
from tests.web.pictures import encode, landscape
from tests.web.steps import RUN_TIMEOUT_MS, expect, set_steps, wait_until

NAMES = ["lake.png", "dusk.png", "tall.png"]
ROOT = Path(__file__).resolve().parents[2]
# As the edit-flow test's picture: every run writes the git-ignored build copy; the docs picture only on purpose.
SCREENSHOT = ROOT / "build" / "screenshots" / "playground-batch.png"
DOCS_SCREENSHOT = ROOT / "docs" / "playground-batch.png"
UPDATE_DOCS = "FLUXEDIT_UPDATE_DOCS_SCREENSHOT"


def pictures(folder: Path) -> list[Path]:
    # Sizes no other page test uploads: the server keeps identical bytes of one owner once (under the first
    # name it was given), and the history test expects its own 640x480 picture under its own name.
    sizes = {"lake.png": (800, 600), "dusk.png": (656, 492), "tall.png": (480, 640)}
    paths = []
    for name in NAMES:
        path = folder / name
        path.write_bytes(encode(landscape(*sizes[name])))
        paths.append(path)
    return paths


def test_three_images_run_as_one_batch_fill_the_grid_and_download_as_a_zip(page, server, tmp_path):
    open_playground(page, server)
    page.set_input_files("#image-file", [str(path) for path in pictures(tmp_path)])
    expect(page.locator("#chosen-name")).to_have_text("3 images")
    expect(page.locator("#chosen-batch img")).to_have_count(3)
    page.fill("#prompt", "Make it a watercolour painting")
    set_steps(page, 1)
    # Each image is priced as its own prediction: three started megapixels at $0.025.
    expect(page.locator("#run-price")).to_have_text("$0.075")

    page.click("#run")
    expect(page.locator("#batch-view")).to_be_visible()
    expect(page.locator("#batch-grid .batch-cell")).to_have_count(3)
    expect(page.locator("#stage")).to_be_hidden()  # the single-edit stage gives way to the grid
    expect(page.locator("#batch-progress")).to_contain_text("3/3 done · 0 failed · cost $0.075", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#batch-progress")).to_contain_text("finished")
    expect(page.locator("#run")).to_be_enabled()
    expect(page.locator('#batch-grid .batch-cell[data-status="success"]')).to_have_count(3)
    # Every cell now shows its output, loaded: the server's output file, not the input's blob.
    wait_until(
        page,
        "[...document.querySelectorAll('#batch-grid img')]"
        ".every((img) => img.src.includes('/outputs/') && img.naturalWidth > 0)",
    )
    sizes = page.evaluate(
        "[...document.querySelectorAll('#batch-grid img')].map((img) => [img.naturalWidth, img.naturalHeight])"
    )
    assert sizes == [[1184, 880], [1184, 880], [880, 1184]]
    assert page.locator("#batch-grid .batch-name").all_inner_texts() == NAMES
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".output-card").screenshot(path=str(SCREENSHOT))
    if os.environ.get(UPDATE_DOCS) == "1":
        DOCS_SCREENSHOT.write_bytes(SCREENSHOT.read_bytes())

    expect(page.locator("#batch-zip")).to_be_visible()
    with page.expect_download() as download_info:
        page.click("#batch-zip")
    download = download_info.value
    assert download.suggested_filename.endswith("-results.zip")
    with zipfile.ZipFile(Path(download.path())) as archive:
        names = sorted(archive.namelist())
        assert names == sorted([*NAMES, "manifest.csv"]), names
        for name in NAMES:
            with Image.open(io.BytesIO(archive.read(name))) as picture:
                assert picture.format == "PNG"
        manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert sorted(row["name"] for row in manifest) == sorted(NAMES)
    assert {row["status"] for row in manifest} == {"success"}


def test_one_image_keeps_the_single_edit_flow(page, server, photo):
    open_playground(page, server)
    page.set_input_files("#image-file", str(photo))
    expect(page.locator("#chosen-name")).to_have_text(photo.name)
    expect(page.locator("#chosen-batch")).to_be_hidden()
    expect(page.locator("#batch-view")).to_be_hidden()


def test_a_refused_file_is_left_out_of_the_batch_with_its_reason(page, server, tmp_path):
    open_playground(page, server)
    paths = pictures(tmp_path)
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    page.set_input_files("#image-file", [str(paths[0]), str(notes), str(paths[1])])
    expect(page.locator("#chosen-name")).to_have_text("2 images")
    expect(page.locator("#image-error")).to_contain_text("Left out: “notes.png” is not an image")
