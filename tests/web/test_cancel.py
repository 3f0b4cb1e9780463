"""Cancelling a run from the page stops it on the server before it ends (how soon after the cancel arrives, within
a step, is the service tests' job: the page cannot see when its request reaches the worker)."""

from __future__ import annotations

import json
import threading

from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, set_steps, wait_until


def follow_steps(server, prediction_id: str) -> tuple[list[int], threading.Thread]:
    """Every step the server streams for the prediction, gathered in a thread until its `done` event."""
    steps: list[int] = []

    def listen() -> None:
        with server.client() as http, http.stream("GET", f"/v1/prediction/{prediction_id}/stream") as events:
            for line in events.iter_lines():
                if line.startswith("data:") and '"step"' in line:
                    steps.append(json.loads(line.removeprefix("data:"))["step"])
                if line.startswith("event: done"):
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    return steps, listener


def test_cancel_from_the_page_stops_the_edit_on_the_server_before_its_last_step(page, server, photo):
    open_playground(page, server)
    choose_file(page, photo)
    page.fill("#prompt", "Make it autumn")
    set_steps(page, 50)
    page.click("#run")
    wait_until(page, "document.getElementById('progress').getAttribute('aria-valuenow') > 0")
    assert page.inner_text("#progress-text").endswith("of 50")
    with server.client() as http:
        latest = http.get("/v1/prediction", params={"limit": 1}).json()["data"][0]
    steps, listener = follow_steps(server, latest["id"])
    page.click("#cancel")

    expect(page.locator("#status-pill")).to_have_text("Cancelled", timeout=60_000)
    expect(page.locator("#placeholder")).to_contain_text("cancelled")
    expect(page.locator("#run")).to_be_enabled()
    assert int(page.get_attribute("#progress", "aria-valuenow")) < 100
    listener.join(timeout=60)
    assert not listener.is_alive(), "the server's stream never ended"
    # The server itself stopped: the stream ended without the 50th step, and the row says why.
    assert all(step < 50 for step in steps)
    with server.client() as http:
        stored = http.get(f"/v1/prediction/{latest['id']}").json()
    assert stored["status"] == "cancelled" and stored["input"]["num_inference_steps"] == 50
    assert "cancelled while running" in stored["logs"] and stored["output"] is None
    # The history shows it too, as cancelled.
    expect(page.locator(f"#history-list li[data-id='{latest['id']}'] .status-pill")).to_have_text("Cancelled")
