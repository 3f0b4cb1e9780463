"""Images are checked in the browser before anything is sent: URLs, sizes, formats; references; drop."""

from __future__ import annotations

import base64

import pytest

from tests.helpers import encoded, pattern
from tests.web.conftest import open_playground
from tests.web.pictures import encode, landscape
from tests.web.steps import expect


@pytest.fixture
def api_calls(page):
    """The requests the page makes that change something on the server."""
    sent: list[str] = []
    page.on("request", lambda request: request.method == "POST" and sent.append(request.url))
    return sent


@pytest.mark.parametrize("text", ["not a url", "htp://example.com/a.png", "http//example.com/a.png", "https://"])
def test_a_malformed_url_says_invalid_url(page, server, api_calls, text):
    open_playground(page, server)
    page.fill("#image-url", text)
    page.click("#image-url-use")
    expect(page.locator("#image-error")).to_have_text("Invalid URL.")
    expect(page.locator("#image-url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#chosen")).to_be_hidden()
    assert api_calls == []


def test_a_pasted_url_is_checked_at_once(page, server, api_calls):
    open_playground(page, server)
    page.locator("#image-url").fill("ftp:/files.example.com/x.jpg")
    page.dispatch_event("#image-url", "paste")
    expect(page.locator("#image-error")).to_have_text("Invalid URL.")
    assert api_calls == []


def test_a_file_over_50_mb_is_refused_before_upload(page, server, api_calls, tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.write(b"\xff\xd8\xff\xe0")
        file.truncate(51 * 1024 * 1024)  # sparse: instant to make
    open_playground(page, server)
    page.set_input_files("#image-file", str(huge))
    expect(page.locator("#image-error")).to_have_text("“huge.jpg” is 51.0 MB: the limit is 50 MB per image.")
    expect(page.locator("#chosen")).to_be_hidden()
    page.fill("#prompt", "anything")
    page.click("#run")
    expect(page.locator("#image-error")).to_have_text("Choose an image to edit first.")
    assert api_calls == []


def test_files_that_are_not_images_are_named(page, server, api_calls, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("just some text, named like a picture")
    gif = tmp_path / "anim.gif"
    pattern(32, 32).save(gif, "GIF")
    open_playground(page, server)
    page.set_input_files("#image-file", str(notes))
    expect(page.locator("#image-error")).to_have_text("“notes.png” is not an image. Choose a JPEG, PNG or WebP file.")
    page.set_input_files("#image-file", str(gif))
    refused = "“anim.gif” is a GIF image. Only JPEG, PNG and WebP are accepted."
    expect(page.locator("#image-error")).to_have_text(refused)
    assert api_calls == []


def test_too_narrow_images_are_refused_like_the_server_does(page, server, tmp_path):
    strip = tmp_path / "strip.png"
    strip.write_bytes(encoded(pattern(500, 100), "PNG"))
    open_playground(page, server)
    page.set_input_files("#image-file", str(strip))
    expect(page.locator("#image-error")).to_have_text("“strip.png” is 500×100, wider than 4:1. Crop it first.")


def test_up_to_three_references(page, server, tmp_path):
    paths = []
    for index in range(4):
        path = tmp_path / f"ref{index}.webp"
        path.write_bytes(encoded(pattern(300, 200, seed=index), "WEBP"))
        paths.append(str(path))
    open_playground(page, server)
    page.set_input_files("#ref-file", paths)
    expect(page.locator("#refs li")).to_have_count(3)
    expect(page.locator("#ref-error")).to_contain_text("At most 3 reference images; “ref3.webp” was left out.")
    expect(page.locator("#refs-add")).to_be_hidden()
    page.click("#refs li >> nth=1 >> button")
    expect(page.locator("#refs li")).to_have_count(2)
    expect(page.locator("#refs-add")).to_be_visible()
    assert '"image_urls": [' in page.text_content("#code-curl")
    assert "REF1=$(curl" in page.text_content("#code-curl")


def test_an_image_can_be_dropped(page, server):
    open_playground(page, server)
    data = base64.b64encode(encode(landscape(320, 240), "JPEG")).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
          return transfer;
        }""",
        data,
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#chosen-name")).to_have_text("dropped.jpg")
    expect(page.locator("#chosen-meta")).to_contain_text("320×240 · JPEG")
    # 4:3 in, the trained 1184x880 out, whatever mode says so; 16:9 gives 1360x768 (two started MP at 2 images).
    page.click("#settings summary")
    page.select_option("#set-resolution_mode", "16:9")
    page.click("label[for=set-num_images-2]")
    expect(page.locator("#set-resolution_mode-hint")).to_have_text("The output will be 1360×768 pixels.")
    expect(page.locator("#run-price")).to_have_text("$0.05")
