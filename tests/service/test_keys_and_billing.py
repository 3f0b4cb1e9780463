"""API keys, isolation between keys, spending limits, prices and usage."""

import subprocess

import httpx
import pytest

from tests.helpers import encoded, pattern
from tests.service.server import FLUXEDIT, Server, create, upload, wait_done

PHOTO = encoded(pattern(640, 480), "PNG")


def make_key(data_dir, name, *extra) -> str:
    result = subprocess.run(
        [FLUXEDIT, "keys", "create", name, "--data-dir", str(data_dir), *extra], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    data = tmp_path_factory.mktemp("keys") / "data"
    keys = {
        "alice": make_key(data, "alice"),
        "bob": make_key(data, "bob"),
        "capped": make_key(data, "capped", "--limit", "0.05"),
    }
    with Server(data) as server:
        yield server, keys


def test_keys_are_printed_once_and_listed_without_the_secret(keyed, tmp_path):
    server, keys = keyed
    assert keys["alice"].startswith("fxe_") and len(keys["alice"]) > 40
    listing = subprocess.run([FLUXEDIT, "keys", "list", "--data-dir", str(server.data_dir)], capture_output=True,
                             text=True).stdout  # fmt: skip
    assert "alice" in listing and "bob" in listing
    assert keys["alice"] not in listing


def test_no_key_or_a_wrong_key_is_401(keyed):
    server, _ = keyed
    assert httpx.get(server.url + "/v1/prediction").status_code == 401
    response = httpx.get(server.url + "/v1/prediction", headers={"Authorization": "Bearer fxe_wrong"})
    assert response.status_code == 401 and "not valid" in response.json()["error"]
    assert httpx.get(server.url + "/v1/models/flux-kontext-dev").status_code == 200  # public
    assert httpx.get(server.url + "/health").status_code == 200


def test_x_api_key_header_works(keyed):
    server, keys = keyed
    assert httpx.get(server.url + "/v1/prediction", headers={"X-API-Key": keys["bob"]}).status_code == 200


def test_a_key_sees_only_its_own_predictions_and_files(keyed):
    server, keys = keyed
    with server.client(keys["alice"]) as alice, server.client(keys["bob"]) as bob:
        photo = upload(alice, PHOTO)
        prediction_id = create(alice, image_url=photo["id"], num_inference_steps=1)
        assert wait_done(alice, prediction_id)["status"] == "success"
        assert bob.get(f"/v1/prediction/{prediction_id}").status_code == 404
        assert bob.post(f"/v1/prediction/{prediction_id}/cancel").status_code == 404
        assert bob.get(f"/v1/prediction/{prediction_id}/stream").status_code == 404
        assert prediction_id not in {p["id"] for p in bob.get("/v1/prediction").json()["data"]}
        assert bob.get(f"/v1/files/{photo['id']}").status_code == 404
        response = bob.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo["id"]}})
        assert response.status_code == 422 and "is not a file of yours" in response.json()["error"]


def test_revoked_key_is_refused(keyed):
    server, _ = keyed
    key = make_key(server.data_dir, "temporary")
    assert httpx.get(server.url + "/v1/prediction", headers={"X-API-Key": key}).status_code == 200
    subprocess.run([FLUXEDIT, "keys", "revoke", "temporary", "--data-dir", str(server.data_dir)], check=True)
    assert httpx.get(server.url + "/v1/prediction", headers={"X-API-Key": key}).status_code == 401


def test_costs_usage_and_the_spending_limit(keyed):
    server, keys = keyed
    with server.client(keys["bob"]) as bob:
        photo = upload(bob, PHOTO)["id"]
        wide = wait_done(bob, create(bob, image_url=photo, num_inference_steps=1, resolution_mode="21:9"))
        assert (wide["width"], wide["height"]) == (1568, 672)  # 1,053,696 pixels: two units
        assert wide["metrics"]["cost"] == 0.05
    with server.client(keys["capped"]) as capped:
        photo = upload(capped, PHOTO)["id"]
        one = wait_done(capped, create(capped, image_url=photo, num_inference_steps=1))
        assert one["metrics"]["cost"] == 0.025  # 1184x880 is under 1,048,576 pixels: one unit
        too_dear = capped.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo,
                                                                 "resolution_mode": "21:9"}})  # fmt: skip
        assert too_dear.status_code == 402  # $0.025 + $0.05 would pass the limit: refused before it runs
        assert "($0.050) would pass this key's $0.05 spending limit: $0.025 spent" in too_dear.json()["error"]
        two = wait_done(capped, create(capped, image_url=photo, num_inference_steps=1))
        assert two["metrics"]["cost"] == 0.025
        usage = capped.get("/v1/usage").json()
        assert usage["total"] == {"images": 2, "predictions": 2, "cost": 0.05}
        assert usage["data"][0]["images"] == 2 and usage["spending_limit"] == 0.05
        refused = capped.post("/v1/prediction", json={"input": {"prompt": "x", "image_url": photo}})
        assert refused.status_code == 402
        assert "$0.05 spending limit" in refused.json()["error"]


def test_without_keys_the_server_refuses_to_listen_beyond_loopback(tmp_path):
    result = subprocess.run(
        [FLUXEDIT, "serve", "--model", "tiny", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
