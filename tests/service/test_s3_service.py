"""A real `fluxedit serve --storage s3://bucket/prefix` on 127.0.0.1, against a local S3 server: uploads,
outputs and LoRAs live in the bucket under the prefix (nothing in the local files folder), outputs come back
through the API (streamed, or as a presigned redirect after the same key checks), retention deletes them."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import httpx

from tests import lora_builders as build
from tests.api.servers import make_key
from tests.helpers import encoded, pattern
from tests.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures)
from tests.service.server import Server, create, upload, wait_done

PREFIX = "team/images"
PHOTO = encoded(pattern(256, 256), "PNG")


def key_of(file_id: str, part: str = "files") -> str:
    return f"{PREFIX}/{part}/{file_id[-2:]}/{file_id}"


def wait_until(check, timeout: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} never held")


def test_predictions_loras_and_retention_with_files_in_s3(tmp_path, s3_bucket):  # noqa: F811
    data = tmp_path / "data"
    env = {"FLUXEDIT_RETAIN_OUTPUTS": "20s", "FLUXEDIT_RETENTION_SWEEP_INTERVAL": "0.5"}
    with Server(data, "--storage", f"s3://{s3_bucket.name}/{PREFIX}", env=env) as server, server.client() as client:
        photo = upload(client, PHOTO)
        stored = s3_bucket.objects(f"{PREFIX}/")
        assert stored == {key_of(photo["id"]): len(PHOTO)}  # the upload is in the bucket, under the prefix
        base = wait_done(client, create(client, image_url=photo["id"], seed=4))
        assert base["status"] == "success", base
        output_id = base["output"][0].rsplit("/", 1)[1].split(".")[0]
        served = httpx.get(base["output"][0])
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        in_bucket = s3_bucket.client().get_object(Bucket=s3_bucket.name, Key=key_of(output_id))["Body"].read()
        assert served.content == in_bucket and in_bucket[:8] == b"\x89PNG\r\n\x1a\n"
        content = client.get(f"/v1/files/{photo['id']}/content")
        assert content.status_code == 200 and content.content == PHOTO
        assert not any(path.is_file() for path in (data / "files").rglob("*"))  # nothing in the local folder

        lora = build.write(build.diffusers_lora(seed=40), tmp_path / "style.safetensors").read_bytes()
        registered = client.post("/v1/loras", files={"file": ("style.safetensors", lora)}, data={"name": "style"})
        assert registered.status_code == 201, registered.text
        digest = hashlib.sha256(lora).hexdigest()
        assert s3_bucket.objects(f"{PREFIX}/loras/") == {f"{PREFIX}/loras/{digest}.safetensors": len(lora)}
        styled = wait_done(client, create(client, image_url=photo["id"], seed=4, loras=[{"path": "style"}]))
        assert styled["status"] == "success", styled
        assert httpx.get(styled["output"][0]).content != served.content  # the LoRA from the bucket changed it

        # Outputs expire after 20 s: the sweep deletes their objects from the bucket; the upload stays.
        wait_until(lambda: key_of(output_id) not in s3_bucket.objects(f"{PREFIX}/"), 90, "the output's object gone")
        assert httpx.get(base["output"][0]).status_code == 404
        assert key_of(photo["id"]) in s3_bucket.objects(f"{PREFIX}/")
    assert "Traceback" not in server.log()


def test_outputs_redirect_to_presigned_urls_after_the_same_key_checks(tmp_path, s3_bucket):  # noqa: F811
    data = tmp_path / "data"
    keys = {name: make_key(data, name) for name in ("alice", "bob")}
    env = {"FLUXEDIT_S3_PRESIGNED_SECONDS": "90"}
    with (
        Server(data, "--storage", f"s3://{s3_bucket.name}/{PREFIX}", env=env) as server,
        server.client(keys["alice"]) as alice,
        server.client(keys["bob"]) as bob,
    ):
        photo = upload(alice, PHOTO)["id"]
        done = wait_done(alice, create(alice, image_url=photo, seed=2))
        assert done["status"] == "success", done

        for url in (done["output"][0], f"{server.url}/v1/files/{photo}/content"):
            answer = alice.get(url, follow_redirects=False)
            assert answer.status_code == 307, answer.text
            location = answer.headers["location"]
            assert location.startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/{PREFIX}/files/")
            assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["90"]  # short-lived
            fetched = httpx.get(location)
            assert fetched.status_code == 200
        assert fetched.content == PHOTO  # the last one: the upload, as stored

        assert bob.get(f"/v1/files/{photo}/content", follow_redirects=False).status_code == 404  # not bob's
        assert httpx.get(f"{server.url}/outputs/file_nosuchfileatallxxxxx.png").status_code == 404
