"""/openapi.json is complete: a request schema for every POST, a response schema for every 2xx, every error
body in its dialect's shape with examples, and the key's security schemes; unknown routes and wrong methods
answer in the dialect's error shape too (never FastAPI's {"detail": ...} on the seed's paths)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fluxedit.api.app import create_app
from fluxedit.config import Settings

ERROR_MODELS = {"seed": "SeedError", "replicate": "ProblemDetails", "openai": "OpenAIError"}
NOT_OURS = {"/health", "/metrics"}  # operations' endpoints (their documents are kept with health.py)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings(model="tiny", data_dir=tmp_path_factory.mktemp("openapi") / "data"))


@pytest.fixture(scope="module")
def document(app) -> dict:
    return TestClient(app).get("/openapi.json").json()  # no lifespan: the document needs no worker


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if path not in NOT_OURS:
                yield path, method, operation


def dialect(path: str) -> str:
    if path.startswith("/v1/images/"):
        return "openai"
    if path.startswith(("/v1/predictions", "/v1/webhooks/")) or (path.count("/") == 5 and "/models/" in path):
        return "replicate"
    return "seed"


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_post_names_its_request_body_schema(document):
    posts = [(path, operation) for path, method, operation in operations(document) if method == "post"]
    assert len(posts) >= 11
    for path, operation in posts:
        content = operation["requestBody"]["content"]
        for media_type, body in content.items():
            schema = resolve(document, body["schema"])
            assert schema.get("properties") or schema.get("additionalProperties"), (path, media_type)


def test_the_create_bodies_document_their_fields(document):
    seed = document["paths"]["/v1/prediction"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    seed_input = resolve(document, resolve(document, seed)["properties"]["input"])
    assert {"prompt", "image_url", "num_images", "loras"} <= set(seed_input["properties"])
    assert "write_metadata" not in seed_input["properties"]  # an engine option, as GET /v1/models shows it
    replicate = document["paths"]["/v1/models/{owner}/{name}/predictions"]["post"]["requestBody"]
    their_input = resolve(document, replicate["content"]["application/json"]["schema"])["properties"]["input"]
    assert {"prompt", "input_image", "aspect_ratio", "go_fast"} <= set(their_input["properties"])
    edits = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    form = resolve(document, edits["schema"])
    assert form["properties"]["image"]["format"] == "binary" and "prompt" in form["required"]


def test_every_success_answer_has_a_schema(document):
    for path, method, operation in operations(document):
        successes = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
        assert successes, (method, path)
        for code, answer in successes.items():
            if code == "204":
                continue
            for media_type, body in answer["content"].items():
                assert body.get("schema"), (method, path, code, media_type)


def test_every_error_is_documented_in_its_dialect_shape_with_examples(document):
    for path, method, operation in operations(document):
        expected = ERROR_MODELS[dialect(path)]
        errors = {code: answer for code, answer in operation["responses"].items() if code[0] in "45"}
        assert {"401", "404", "429"} <= set(errors) or path.startswith(("/outputs/", "/v1/models")), (method, path)
        assert "422" in errors or dialect(path) == "openai", (method, path)  # OpenAI answers 400 for a bad value
        for code, answer in errors.items():
            body = answer["content"]["application/json"]
            assert body["schema"]["$ref"].endswith(f"/{expected}"), (method, path, code)
            assert body["examples"], (method, path, code)
            example = next(iter(body["examples"].values()))["value"]
            if expected == "SeedError":
                assert set(example) == {"error"}
            elif expected == "ProblemDetails":
                assert {"title", "detail", "status"} <= set(example) and example["status"] == int(code)
            else:
                assert set(example["error"]) == {"message", "type", "param", "code"}
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's list is never answered


def test_the_key_is_declared_so_a_generated_client_sends_it(document):
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["bearer"].items()
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes["apiKey"].items()
    create = document["paths"]["/v1/prediction"]["post"]
    assert create["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in document["paths"]["/outputs/{name}"]["get"]  # an output's id is its capability


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nothing-here", 404),
        ("GET", "/nothing", 404),
        ("DELETE", "/v1/prediction", 405),
        ("PUT", "/v1/files", 405),
    ],
)
def test_an_unknown_route_or_method_answers_the_seed_error_shape(app, method, path, status):
    answer = TestClient(app).request(method, path)
    assert answer.status_code == status
    assert set(answer.json()) == {"error"} and answer.json()["error"]


def test_replicate_and_openai_paths_answer_404_and_405_in_their_own_shapes(app):
    client = TestClient(app)
    replicate = client.request("DELETE", "/v1/predictions")
    assert replicate.status_code == 405 and replicate.json()["status"] == 405 and replicate.json()["detail"]
    missing = client.get("/v1/predictions/a/b/c")
    assert missing.status_code == 404 and missing.json()["title"] == "Not found"
    tab = client.get("/v1/models/a/%09/predictions/x")  # a tab in a segment: the shape follows the routed path
    assert tab.status_code == 404 and tab.json()["title"] == "Not found"
    openai = client.get("/v1/images/edits")
    assert openai.status_code == 405 and openai.json()["error"]["type"] == "invalid_request_error"
