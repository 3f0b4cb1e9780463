"""The whole edit on the page: choose a file, run, watch progress, download, compare, edit the result."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from PIL import Image

from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, progress_seen, record_progress, result_url, run_and_wait, set_steps

ROOT = Path(__file__).resolve().parents[2]
# Every run writes its picture to the git-ignored build folder; the tracked docs picture is refreshed only on
# purpose (`make screenshots` sets the variable), so `make test` leaves the working tree as it found it.
SCREENSHOT = ROOT / "build" / "screenshots" / "playground.png"
DOCS_SCREENSHOT = ROOT / "docs" / "playground.png"
UPDATE_DOCS = "FLUXEDIT_UPDATE_DOCS_SCREENSHOT"


def test_edit_download_compare_and_edit_again(page, server, photo):
    open_playground(page, server)
    choose_file(page, photo)
    expect(page.locator("#chosen-thumb")).to_be_visible()
    expect(page.locator("#chosen-meta")).to_contain_text("800×600 · PNG")
    page.fill("#prompt", "Change the sky to a starry night, keep the mountains and the lake")
    set_steps(page, 2)
    page.fill("#set-seed", "1234")
    # 800x600 matches the trained 1184x880 size: one started megapixel, one image.
    expect(page.locator("#run-price")).to_have_text("$0.025")
    expect(page.locator("#run-price-detail")).to_contain_text("1184×880")

    record_progress(page)
    run_and_wait(page)
    seen = progress_seen(page)
    assert ("Step 1 of 2", 50) in seen and ("Step 2 of 2", 100) in seen, seen
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100")
    first_output = result_url(page)
    assert re.search(r"/outputs/file_[\w-]+\.png$", first_output)
    meta = page.inner_text("#result-meta")
    assert "Seed 1234" in meta and "Size 1184×880" in meta
    assert re.search(r"Run time \d+\.\d+ s", meta), meta

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    picture = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
    assert picture.format == "PNG" and picture.size == (1184, 880)  # the size the page reports
    assert download.suggested_filename.endswith(".png")

    expect(page.locator("#result-image")).to_be_visible()
    expect(page.locator("#before-image")).to_be_hidden()  # the result alone, until asked to compare
    page.click("#view-compare")
    expect(page.locator("#before-image")).to_be_visible()
    expect(page.locator("#compare")).to_have_class(re.compile(r"\bcomparing\b"))
    assert page.get_attribute("#before-image", "src").startswith("blob:")  # the user's own file
    page.focus("#compare-range")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("getComputedStyle(document.getElementById('compare')).getPropertyValue('--split')") == "51%"
    take_readme_screenshot(page)

    page.click("#edit-result")
    expect(page.locator("#chosen-meta")).to_contain_text("an earlier result")
    expect(page.locator("#prompt")).to_be_focused()
    expect(page.locator("#prompt")).to_have_value("")
    page.fill("#prompt", "Add a small red boat on the lake")
    run_and_wait(page)
    second_output = result_url(page)
    assert second_output != first_output
    with server.client() as http:
        latest = http.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
    assert latest["input"]["image_url"] == first_output  # the result itself was the next input

    steps = page.locator("#chain button")
    expect(steps).to_have_count(3)
    expect(steps.nth(2)).to_have_attribute("aria-current", "step")
    steps.nth(1).click()  # reopen step 1
    expect(steps.nth(1)).to_have_attribute("aria-current", "step")
    expect(page.locator("#prompt")).to_have_value("Change the sky to a starry night, keep the mountains and the lake")
    expect(page.locator("#result-image")).to_have_attribute("src", first_output)
    expect(page.locator("#set-seed")).to_have_value("1234")


def take_readme_screenshot(page) -> None:
    """The README's picture of the page: a finished edit, before/after on show."""
    page.click("#settings summary")  # fold the settings away again, as a first visit shows them
    page.set_viewport_size({"width": 1280, "height": 960})
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#compare-range").fill("50")
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    if os.environ.get(UPDATE_DOCS) == "1":
        DOCS_SCREENSHOT.write_bytes(SCREENSHOT.read_bytes())
    page.set_viewport_size({"width": 1360, "height": 1000})
