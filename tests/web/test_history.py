"""History: the caller's recent predictions with status, thumbnails and run time, and the average."""

from __future__ import annotations

import base64
import re

from tests.service.server import create, upload, wait_done
from tests.web.conftest import make_key, open_playground
from tests.web.pictures import encode, landscape
from tests.web.steps import expect, wait_until


def shown_seconds(seconds: float) -> str:
    """A run time as the page writes it (dom.js formatSeconds): fewer decimals as it grows."""
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s" if seconds < 100 else f"{round(seconds)} s"


def test_history_lists_predictions_and_reopens_one(page, server):
    with server.client() as http:
        file_id = upload(http, encode(landscape(640, 480)), "hills.png")["id"]
        first = wait_done(http, create(http, image_url=file_id, prompt="Make it snowy"))
        second = wait_done(http, create(http, image_url=file_id, prompt="Make it misty", seed=8))
        listed = http.get("/v1/prediction", params={"limit": 10}).json()["data"]
    open_playground(page, server)

    items = page.locator("#history-list li")
    expect(items.first).to_have_attribute("data-id", second["id"])
    entry = page.locator(f"#history-list li[data-id='{first['id']}']")
    expect(entry.locator(".status-pill")).to_have_text("Done")
    expect(entry.locator(".run-time")).to_have_text(shown_seconds(first["metrics"]["predict_time"]))
    expect(entry.locator("img.thumb")).to_have_attribute("src", first["output"][0])
    times = [p["metrics"]["predict_time"] for p in listed if p["status"] == "success"]
    expect(page.locator("#avg-run-time")).to_have_text(shown_seconds(sum(times) / len(times)))

    page.click(f"#history-list li[data-id='{second['id']}'] button")
    expect(page.locator("#prompt")).to_have_value("Make it misty")
    expect(page.locator("#result-image")).to_have_attribute("src", second["output"][0])
    expect(page.locator("#chosen-name")).to_have_text("hills.png")  # its input, fetched back from the server
    expect(page.locator("#set-seed")).to_have_value("8")
    expect(page.locator("#result-meta")).to_contain_text("Seed 8")


def test_an_input_sent_as_a_data_uri_reopens_as_the_stored_upload(page, keyed_server):
    # The server stores a data URI as a file of the key and shows its /v1/files/ID/content URL, which needs
    # the key: the page must fetch it with the key, not put the bare URL in an <img>.
    data_uri = "data:image/png;base64," + base64.b64encode(encode(landscape(320, 240))).decode()
    key = make_key(keyed_server.data_dir, "history")  # its own key: the shared one's history stays empty
    with keyed_server.client(key) as http:
        done = wait_done(http, create(http, image_url=data_uri, prompt="Make it rainy"))
    assert "/v1/files/" in done["input"]["image_url"]
    open_playground(page, keyed_server)
    page.fill("#api-key", key)
    page.click("#key-panel button[type=submit]")
    page.click(f"#history-list li[data-id='{done['id']}'] button")
    expect(page.locator("#prompt")).to_have_value("Make it rainy")
    expect(page.locator("#chosen-thumb")).to_have_attribute("src", re.compile(r"^blob:"))
    wait_until(page, "document.getElementById('chosen-thumb').naturalWidth === 320")
