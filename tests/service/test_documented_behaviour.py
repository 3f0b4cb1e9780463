"""Documented behaviour that had no test: FLUXEDIT_PUBLIC_URL, DELETE /v1/files, /v1/usage?days, acceleration
through the API, and the 60 s cap on a long poll (docs/api.md, docs/operations.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from starlette.requests import Request

from fluxedit.api.deps import MAX_WAIT_S, requested_wait
from fluxedit.store.database import open_database
from fluxedit.store.models import Prediction
from tests.helpers import encoded, pattern
from tests.service.server import Server, create, upload, wait_done

PUBLIC_URL = "https://edits.example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("documented") / "data"
    with Server(data, env={"FLUXEDIT_PUBLIC_URL": PUBLIC_URL}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def photo_id(client):
    return upload(client, encoded(pattern(320, 240), "PNG"))["id"]


def test_public_url_is_the_base_of_every_absolute_url(client, photo_id):
    prediction = wait_done(client, create(client, image_url=photo_id, num_inference_steps=1))
    assert prediction["status"] == "success"
    assert prediction["urls"]["get"] == f"{PUBLIC_URL}/v1/prediction/{prediction['id']}"
    (output,) = prediction["output"]
    assert output.startswith(f"{PUBLIC_URL}/outputs/")
    # The same file, under the address the request came in on (what a proxy at PUBLIC_URL forwards).
    assert client.get(output.removeprefix(PUBLIC_URL)).status_code == 200


def test_delete_a_file_answers_204_and_it_is_gone(client):
    uploaded = upload(client, encoded(pattern(64, 64, seed=9), "PNG"), name="gone.png")
    assert client.get(f"/v1/files/{uploaded['id']}").status_code == 200
    deleted = client.delete(f"/v1/files/{uploaded['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"/v1/files/{uploaded['id']}").status_code == 404
    assert client.get(f"/v1/files/{uploaded['id']}/content").status_code == 404
    assert client.delete(f"/v1/files/{uploaded['id']}").status_code == 404


def test_usage_counts_only_the_days_asked_for(server, client, photo_id):
    old = wait_done(client, create(client, image_url=photo_id, num_inference_steps=1))["id"]
    recent = wait_done(client, create(client, image_url=photo_id, num_inference_steps=1))["id"]
    sessions = open_database(f"sqlite:///{server.data_dir / 'fluxedit.db'}")
    with sessions() as session, session.begin():  # as if `old` had been made ten days ago
        made = session.get(Prediction, old).created_at
        session.execute(update(Prediction).where(Prediction.id == old).values(created_at=made - timedelta(days=10)))
    with sessions() as session:
        assert session.get(Prediction, old).created_at < session.get(Prediction, recent).created_at - timedelta(days=9)

    week, month = (client.get("/v1/usage", params={"days": days}).json() for days in (7, 30))
    assert week["days"] == 7 and month["days"] == 30
    assert month["total"]["predictions"] - week["total"]["predictions"] == 1  # only `old` is outside the week
    assert client.get("/v1/usage").json()["total"] == month["total"]  # 30 days by default
    for bad in (0, 367, "many"):
        refused = client.get("/v1/usage", params={"days": bad})
        assert refused.status_code == 422 and "days" in refused.text


def test_acceleration_reaches_the_engine_through_the_api(client, photo_id):
    passes = {}
    for level in ("none", "regular"):
        prediction = wait_done(client, create(client, image_url=photo_id, num_inference_steps=8, acceleration=level))
        assert prediction["status"] == "success", prediction
        assert prediction["metrics"]["acceleration"] == level
        passes[level] = prediction["metrics"]["transformer_passes"]
    assert passes == {"none": 8, "regular": 5}  # regular: steps 0, 1, 3, 5 and 7 in full
    refused = client.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo_id,
                                                             "acceleration": "turbo"}})  # fmt: skip
    assert refused.status_code == 422 and "acceleration" in refused.text


def asked(query: str = "", prefer: str | None = None) -> Request:
    headers = [(b"prefer", prefer.encode())] if prefer is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": query.encode()})


def test_a_longer_wait_is_held_sixty_seconds_at_most():
    assert MAX_WAIT_S == 60
    assert requested_wait(asked(), "600") == 60
    assert requested_wait(asked(prefer="wait=600"), None) == 60
    assert requested_wait(asked(prefer="wait"), None) == 60  # a bare preference asks for the cap
    assert requested_wait(asked(), "12.5") == 12.5  # below the cap, as asked


def test_a_wait_over_the_cap_is_accepted_not_refused(client, photo_id):
    prediction_id = create(client, image_url=photo_id, num_inference_steps=1)
    answer = client.get(f"/v1/prediction/{prediction_id}", params={"wait": 600})
    assert answer.status_code == 200 and answer.json()["status"] == "success"


def test_allow_unauthenticated_serves_beyond_loopback_without_keys(tmp_path):
    """docs/operations.md: without keys, --host 0.0.0.0 is refused unless something in front authenticates and the
    operator says so with --allow-unauthenticated; then the API answers without a key."""
    with Server(tmp_path / "data", "--host", "0.0.0.0", "--allow-unauthenticated") as running:
        assert running.wait_ready()["status"] in ("ready", "busy")
        with running.client() as open_client:
            listed = open_client.get("/v1/prediction")
            assert listed.status_code == 200 and listed.json()["data"] == []
            assert upload(open_client, encoded(pattern(32, 32), "PNG"))["id"].startswith("file_")
