"""The mask tool and full resolution on the page: paint a region, run at the input's own size, and the
pixels outside the region (and its feather) come back as the input's; brush, eraser, invert, clear."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fluxedit.imaging.composite import feather_width
from fluxedit.service.preparation import MAX_FULL_RESOLUTION_PIXELS
from tests.web.conftest import open_playground
from tests.web.pictures import encode, landscape
from tests.web.steps import choose_file, expect, result_url, run_and_wait, set_steps
from tests.web.test_layout import UNLABELLED_CONTROLS

ROOT = Path(__file__).resolve().parents[2]
# As the other page pictures: every run writes the git-ignored build copy; the docs picture only on purpose.
SCREENSHOT = ROOT / "build" / "screenshots" / "playground-mask.png"
DOCS_SCREENSHOT = ROOT / "docs" / "playground-mask.png"
UPDATE_DOCS = "FLUXEDIT_UPDATE_DOCS_SCREENSHOT"

# Exactly the PNG the page uploads as mask_url, read back as a data URI.
MASK_IN_JS = """async () => {
  const { maskPng } = await import('/web/js/mask.js');
  const blob = await maskPng(document.getElementById('mask-canvas'));
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


def sent_mask(page) -> np.ndarray:
    """The mask the page would send now, as booleans (height, width): True where the edit may change."""
    return mask_values(base64.b64decode(page.evaluate(MASK_IN_JS)))


def mask_values(png: bytes) -> np.ndarray:
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.mode == "RGBA"
    values = np.asarray(picture)
    grey, alpha = values[..., :3], values[..., 3]
    # Painted: opaque white; elsewhere: transparent black. A reader of either the grey or the alpha agrees.
    assert set(np.unique(alpha).tolist()) <= {0, 255}
    assert (grey == alpha[..., None]).all()
    return alpha == 255


def paint(page, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through points given as fractions of the picture (0-1 across, 0-1 down)."""
    box = page.locator("#mask-canvas").bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for point in at[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def paint_top_left_corner(page) -> None:
    page.locator("#mask-size").fill("160")
    paint(page, [(0.02, 0.04), (0.3, 0.04), (0.3, 0.14), (0.02, 0.14), (0.02, 0.24), (0.3, 0.24)])


def start_masking(page, server, path: Path) -> None:
    open_playground(page, server)
    choose_file(page, path)
    expect(page.locator("#region-field")).to_be_visible()
    expect(page.locator("#region-whole")).to_be_checked()  # the default: the whole image, no mask sent
    expect(page.locator("#mask-editor")).to_be_hidden()
    page.click("label[for=region-mask]")
    expect(page.locator("#mask-editor")).to_be_visible()
    expect(page.locator("#mask-coverage")).to_contain_text("Nothing painted yet")


def predictions_sent(page) -> list[dict]:
    """The bodies of every POST /v1/prediction the page makes from now on."""
    bodies: list[dict] = []
    page.on(
        "request",
        lambda request: (
            request.method == "POST"
            and request.url.endswith("/v1/prediction")
            and bodies.append(request.post_data_json)
        ),
    )
    return bodies


def test_brush_eraser_invert_and_clear_change_the_mask_the_page_sends(page, server, photo):
    start_masking(page, server, photo)
    assert not sent_mask(page).any()

    paint_top_left_corner(page)
    mask = sent_mask(page)
    assert mask.shape == (600, 800)  # the input image's own pixel size, not the size it is shown at
    assert mask[40:120, 40:200].all()  # the corner painted...
    assert not mask[300:, :].any() and not mask[:, 500:].any()  # ...and nothing far from it
    expect(page.locator("#mask-coverage")).to_contain_text("of the image")

    page.click("label[for=mask-eraser]")
    page.locator("#mask-size").fill("40")
    paint(page, [(0.05, 0.1), (0.2, 0.1)])
    erased = sent_mask(page)
    assert not erased[60, 60:140].any()  # the eraser's line (at 10% down) is gone from the mask
    assert erased[200, 40:200].all() and (erased <= mask).all()  # the rest stays: it only took away

    page.click("#mask-invert")
    assert (sent_mask(page) == ~erased).all()
    page.click("#mask-invert")
    assert (sent_mask(page) == erased).all()

    page.click("#mask-clear")
    assert not sent_mask(page).any()
    # An empty mask is refused on the page: the server would refuse it, and nothing is sent.
    sent = predictions_sent(page)
    page.fill("#prompt", "Make the sky green")
    page.click("#run")
    expect(page.locator("#mask-error")).to_contain_text("Paint the part of the image to change")
    assert sent == []


def test_the_size_slider_and_the_tools_work_from_the_keyboard(page, server, photo):
    start_masking(page, server, photo)
    assert page.evaluate(UNLABELLED_CONTROLS) == []  # the mask tool's controls too, now it is open
    page.focus("#mask-size")
    before = int(page.input_value("#mask-size"))
    page.keyboard.press("ArrowRight")
    assert int(page.input_value("#mask-size")) > before
    expect(page.locator("#mask-size-value")).to_have_text(f"{page.input_value('#mask-size')} px")
    page.focus("#mask-brush")
    page.keyboard.press("ArrowRight")  # radios move with the arrow keys
    expect(page.locator("#mask-eraser")).to_be_checked()
    page.focus("#mask-invert")
    page.keyboard.press("Enter")  # native buttons: Enter and Space work
    expect(page.locator("#mask-coverage")).to_contain_text("100% of the image")
    page.focus("#mask-clear")
    page.keyboard.press(" ")
    expect(page.locator("#mask-coverage")).to_contain_text("Nothing painted yet")
    page.focus("#region-mask")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#region-whole")).to_be_checked()
    expect(page.locator("#mask-editor")).to_be_hidden()


def test_a_finger_paints_on_a_phone(browser, server, photo):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, has_touch=True)
    page = context.new_page()
    try:
        start_masking(page, server, photo)
        page.locator("#mask-canvas").scroll_into_view_if_needed()
        box = page.locator("#mask-canvas").bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.75)
        mask = sent_mask(page)
        assert mask[450, 600] and mask.sum() < mask.size / 20  # a dot where the finger touched
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the open tool fits a phone
    finally:
        context.close()


def test_a_masked_full_resolution_edit_keeps_every_pixel_outside_the_mask(page, server, photo):
    start_masking(page, server, photo)
    paint_top_left_corner(page)
    page.check("#full-size")
    expect(page.locator("#full-size-hint")).to_contain_text("800×600, the input's own size")
    expect(page.locator("#full-size-hint")).to_contain_text("priced as the model's 1184×880")
    # The price counts what the model makes, whatever size comes back (service/pricing.py).
    expect(page.locator("#run-price-detail")).to_have_text("800×600 · priced as 1184×880 · 1 image")
    expect(page.locator("#run-price")).to_have_text("$0.025")
    page.fill("#prompt", "Paint the sky in the corner deep purple")
    set_steps(page, 2)
    page.fill("#set-seed", "7")

    sent = predictions_sent(page)
    run_and_wait(page)
    take_docs_screenshot(page)
    assert len(sent) == 1
    body = sent[0]["input"]
    assert body["output_resolution"] == "input"
    assert body["mask_url"].startswith("file_")  # the painted PNG, uploaded through /v1/files first
    with server.client() as http:
        uploaded = http.get(f"/v1/files/{body['mask_url']}/content")
        assert uploaded.status_code == 200
        prediction = http.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
    mask = mask_values(uploaded.content)
    assert (mask == sent_mask(page)).all() and mask[40:120, 40:200].all() and not mask[300:, :].any()
    assert prediction["input"]["output_resolution"] == "input"

    url = result_url(page)
    with server.client() as http:
        result = Image.open(io.BytesIO(http.get(url).content))
    assert result.size == (800, 600)  # the input's own size, as the hint said
    expect(page.locator("#result-meta")).to_contain_text("Size 800×600")
    margin = feather_width(800, 600) + 1
    near = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(2 * margin + 1))) > 0
    original = np.asarray(Image.open(photo).convert("RGB"))
    edited = np.asarray(result.convert("RGB"))
    assert (edited[~near] == original[~near]).all()  # byte-identical outside the mask and its feather
    assert (edited[mask] != original[mask]).any()  # and the painted corner was edited

    # 100 %: one result pixel per screen pixel, in a panel that scrolls.
    expect(page.locator("#compare")).to_have_class(re.compile(r"\bcomparing\b"))
    page.click("#zoom-actual")
    expect(page.locator("#zoom-actual")).to_have_attribute("aria-pressed", "true")
    shown = page.locator("#result-image").bounding_box()
    assert round(shown["width"]) == 800 and round(shown["height"]) == 600
    assert page.evaluate("document.getElementById('stage').scrollWidth > document.getElementById('stage').clientWidth")
    page.focus("#compare-range")
    page.keyboard.press("Escape")
    expect(page.locator("#zoom-actual")).to_have_attribute("aria-pressed", "false")
    assert round(page.locator("#result-image").bounding_box()["width"]) < 800  # fitted to the panel again
    fitted = page.locator("#compare").bounding_box()
    page.dblclick("#compare", position={"x": fitted["width"] * 0.9, "y": fitted["height"] * 0.9})
    expect(page.locator("#zoom-actual")).to_have_attribute("aria-pressed", "true")  # zoomed on that corner
    assert page.evaluate("document.getElementById('stage').scrollLeft") > 0  # (600 px tall: no need to scroll down)
    page.click("#zoom-actual")

    # "Edit this result", keeping the mask: the same region is painted on the result.
    page.click("#edit-result")
    expect(page.locator("#chosen-meta")).to_contain_text("an earlier result")
    expect(page.locator("#region-mask")).to_be_checked()
    assert (sent_mask(page) == mask).all()
    page.fill("#prompt", "Now make it gold")
    sent.clear()
    run_and_wait(page)
    assert sent[0]["input"]["image_url"] == url
    with server.client() as http:
        again = mask_values(http.get(f"/v1/files/{sent[0]['input']['mask_url']}/content").content)
    assert (again == mask).all()


def test_a_kept_mask_is_scaled_to_a_result_at_the_models_size(page, server, photo):
    start_masking(page, server, photo)
    paint_top_left_corner(page)
    painted = sent_mask(page)
    page.fill("#prompt", "Make the corner orange")
    set_steps(page, 1)
    run_and_wait(page)
    page.click("#edit-result")  # the result is 1184x880, the model's size for 800x600
    expect(page.locator("#region-mask")).to_be_checked()
    kept = sent_mask(page)
    assert kept.shape == (880, 1184)
    back = np.asarray(Image.fromarray(kept).resize((800, 600), Image.Resampling.NEAREST))
    assert (back != painted).mean() < 0.01  # the same region, scaled (only its edge may move by a pixel)


def test_without_keep_mask_the_next_edit_is_of_the_whole_image(page, server, photo):
    start_masking(page, server, photo)
    paint_top_left_corner(page)
    page.uncheck("#mask-keep")
    page.fill("#prompt", "Make the corner red")
    set_steps(page, 1)
    sent = predictions_sent(page)
    run_and_wait(page)
    assert "mask_url" in sent[0]["input"] and "output_resolution" not in sent[0]["input"]
    page.click("#edit-result")
    expect(page.locator("#region-whole")).to_be_checked()
    expect(page.locator("#mask-editor")).to_be_hidden()
    page.fill("#prompt", "Now all of it blue")
    run_and_wait(page)
    assert "mask_url" not in sent[1]["input"]

    # Reopening the first step brings back the mask it ran with; the second had none.
    steps = page.locator("#chain button")
    expect(steps).to_have_count(3)
    steps.nth(1).click()
    expect(page.locator("#region-mask")).to_be_checked()
    first = sent_mask(page)
    steps.nth(2).click()
    expect(page.locator("#region-whole")).to_be_checked()
    steps.nth(1).click()
    assert (sent_mask(page) == first).all() and first[40:120, 40:200].all() and not first[300:, :].any()


def test_the_python_snippet_sends_the_painted_mask(page, server, photo, tmp_path):
    start_masking(page, server, photo)
    paint_top_left_corner(page)
    page.fill("#prompt", "Make the corner red")
    set_steps(page, 1)
    with page.expect_download() as saved:
        page.click("#mask-save")
    Path(saved.value.path()).replace(tmp_path / "mask.png")
    assert (mask_values((tmp_path / "mask.png").read_bytes()) == sent_mask(page)).all()
    python = page.text_content("#code-python")
    assert 'mask="mask.png",' in python
    assert '"mask_url": "$MASK"' in page.text_content("#code-curl")
    shutil.copy(photo, tmp_path / "lake.png")
    env = {key: value for key, value in os.environ.items() if key != "FLUXEDIT_API_KEY"}
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    painted = sent_mask(page)
    with server.client() as http:
        latest = http.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
        reference = latest["input"]["mask_url"]  # a file id, or its /v1/files URL
        path = f"/v1/files/{reference}/content" if reference.startswith("file_") else reference
        stored = http.get(path).content
    assert latest["status"] == "success"
    assert ((np.asarray(Image.open(io.BytesIO(stored)).convert("L")) >= 128) == painted).all()

    # Reopened from the history, the edit comes back with its mask.
    page.click("label[for=region-whole]")
    page.click("#history-refresh")
    page.click(f"#history-list li[data-id='{latest['id']}'] button")
    expect(page.locator("#region-mask")).to_be_checked()
    assert (sent_mask(page) == painted).all()


def test_full_resolution_above_40_megapixels_is_refused_before_the_run(page, server, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (8000, 5008), (90, 120, 160)).save(big)  # 40.06 MP
    open_playground(page, server)
    choose_file(page, big)
    expect(page.locator("#full-size-hint")).to_contain_text("the model's size")
    page.check("#full-size")
    expect(page.locator("#full-size-error")).to_contain_text("8000×5008 (40.1 MP): full resolution goes up to 40 MP")
    sent = predictions_sent(page)
    page.fill("#prompt", "Make it night")
    page.click("#run")
    expect(page.locator("#run-error")).to_contain_text("full resolution goes up to 40 MP")
    expect(page.locator("#full-size")).to_be_focused()
    assert sent == []
    page.uncheck("#full-size")
    expect(page.locator("#full-size-error")).to_be_empty()


def test_the_page_refuses_past_the_servers_own_limit(page, server):
    open_playground(page, server)
    in_page = page.evaluate("async () => (await import('/web/js/full-size.js')).MAX_FULL_RESOLUTION_PIXELS")
    assert in_page == MAX_FULL_RESOLUTION_PIXELS


def test_a_batch_has_no_mask_tool(page, server, tmp_path):
    paths = []
    for name, size in [("one.png", (720, 540)), ("two.png", (540, 720))]:
        (tmp_path / name).write_bytes(encode(landscape(*size)))
        paths.append(str(tmp_path / name))
    open_playground(page, server)
    page.set_input_files("#image-file", paths)
    expect(page.locator("#chosen-name")).to_have_text("2 images")
    expect(page.locator("#region-field")).to_be_hidden()  # a mask is drawn on one picture
    page.check("#full-size")
    expect(page.locator("#full-size-hint")).to_have_text("Each result comes back at its own input's size.")


def take_docs_screenshot(page) -> None:
    """The docs' picture of the mask tool: a corner painted over the input, full resolution on, and its result
    at the input's size, before and after side by side."""
    page.click("#settings summary")  # fold the settings away again
    page.set_viewport_size({"width": 1280, "height": 1240})
    page.click("#view-compare")
    page.locator("#compare-range").fill("12")  # most of the painted corner on the "after" side
    page.evaluate("document.getElementById('input-title').scrollIntoView()")
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".workbench").screenshot(path=str(SCREENSHOT))
    if os.environ.get(UPDATE_DOCS) == "1":
        DOCS_SCREENSHOT.write_bytes(SCREENSHOT.read_bytes())
    page.set_viewport_size({"width": 1360, "height": 1000})
