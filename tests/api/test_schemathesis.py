"""Every operation of /openapi.json, called by schemathesis against a real keyed server (the tiny model): no
answer is a 5xx, and every answer has a documented status, content type and body schema.

Two passes. The fuzz: generated requests, a fixed number per operation and no shrinking, so it takes a
minute or two on two cores; generated images are random bytes and generated ids name nothing, so nearly
every create is refused before it reaches the worker and the few that are taken end fast. The real
objects: an uploaded image, an edit of it in each dialect (64x64, one step) and the answers about them,
which random ids never reach, checked against the same document.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.servers import keyed_server
from tests.helpers import encoded, pattern
from tests.service.server import upload

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PHOTO = encoded(pattern(64, 64), "PNG")
TINY_EDIT = {"prompt": "make it blue", "num_inference_steps": 1}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    server, keys = keyed_server(tmp_path_factory.mktemp("schemathesis") / "data", "fuzzer")
    try:
        yield server, keys["fuzzer"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def schema(running):
    server, _ = running
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_every_operation_answers_as_documented(running, schema):
    server, key = running
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # every dialect's endpoints are in the document
    failures = {}
    for operation in operations:
        if (error := _fuzz(operation, server.url, key)) is not None:
            failures[operation.label] = error
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())


def _fuzz(operation, base_url: str, key: str) -> str | None:
    """The first failure of one operation's examples, as text; None when every answer is as documented."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure as found is clear enough
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case):
        case.call_and_validate(base_url=base_url, headers=_auth(key), checks=CHECKS, timeout=60)

    try:
        call()
    except (Exception, BaseExceptionGroup) as failure:  # each operation's failure is kept, then all are shown
        return str(failure)[:3000]
    return None


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_answers_about_real_objects_match_the_document(running, schema):
    server, key = running
    with server.client(key) as client:
        image = upload(client, PHOTO)
        seed = client.post("/v1/prediction/run", json={"input": {**TINY_EDIT, "image_url": image["id"]}})
        assert seed.status_code == 200 and seed.json()["status"] == "success", seed.text
        seed_id, output = seed.json()["id"], seed.json()["output"][0]
        replicate = client.post(
            "/v1/models/black-forest-labs/flux-kontext-dev/predictions",
            json={"input": {**TINY_EDIT, "input_image": image["id"]}},
            headers={"Prefer": "wait=60"},
        )
        assert replicate.status_code == 201 and replicate.json()["status"] == "succeeded", replicate.text
    calls = [
        ("GET /v1/prediction/{prediction_id}", {"path_parameters": {"prediction_id": seed_id}}),
        ("GET /v1/prediction/{prediction_id}/stream", {"path_parameters": {"prediction_id": seed_id}}),
        ("GET /v1/prediction/{prediction_id}/webhooks", {"path_parameters": {"prediction_id": seed_id}}),
        ("POST /v1/prediction/{prediction_id}/cancel", {"path_parameters": {"prediction_id": seed_id}}),
        ("GET /v1/prediction", {"query": {"limit": 1}}),
        ("GET /v1/predictions/{prediction_id}", {"path_parameters": {"prediction_id": replicate.json()["id"]}}),
        ("POST /v1/predictions/{prediction_id}/cancel", {"path_parameters": {"prediction_id": seed_id}}),
        ("GET /v1/predictions", {"query": {"limit": 1}}),
        ("GET /v1/files/{file_id}", {"path_parameters": {"file_id": image["id"]}}),
        ("GET /v1/files/{file_id}/content", {"path_parameters": {"file_id": image["id"]}}),
        ("GET /outputs/{name}", {"path_parameters": {"name": httpx.URL(output).path.rsplit("/", 1)[1]}}),
        ("GET /v1/models/{slug}", {"path_parameters": {"slug": "flux-kontext-dev"}}),
        ("GET /v1/usage", {}),
        (
            "POST /v1/images/edits",
            {
                "body": {"image": PHOTO, "prompt": "make it blue", "num_inference_steps": "1"},
                "media_type": "multipart/form-data",
            },
        ),
    ]
    for label, parts in calls:
        operation = schema.find_operation_by_label(label)
        response = operation.Case(**parts).call_and_validate(
            base_url=server.url, headers=_auth(key), checks=CHECKS, timeout=60
        )
        assert response.status_code < 300, (label, response.status_code, response.text[:500])
