"""Cancelling a run from the page stops it on the server, within a step."""

from __future__ import annotations

from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, set_steps, wait_until


def test_cancel_stops_a_running_edit(page, server, photo):
    open_playground(page, server)
    choose_file(page, photo)
    page.fill("#prompt", "Make it autumn")
    set_steps(page, 50)
    page.click("#run")
    wait_until(page, "document.getElementById('progress').getAttribute('aria-valuenow') > 0")
    assert page.inner_text("#progress-text").endswith("of 50")
    page.click("#cancel")

    expect(page.locator("#status-pill")).to_have_text("Cancelled", timeout=60_000)
    expect(page.locator("#placeholder")).to_contain_text("cancelled")
    expect(page.locator("#run")).to_be_enabled()
    stopped_at = int(page.get_attribute("#progress", "aria-valuenow"))
    assert stopped_at < 100
    with server.client() as http:
        latest = http.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
    assert latest["status"] == "cancelled" and latest["input"]["num_inference_steps"] == 50
    # The history shows it too, as cancelled.
    expect(page.locator(f"#history-list li[data-id='{latest['id']}'] .status-pill")).to_have_text("Cancelled")
