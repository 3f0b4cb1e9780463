"""Files in S3, against a local S3 server (moto's server mode): the backend, the file store on it, the workers'
reader, presigned URLs, and retention deleting objects."""

from __future__ import annotations

import hashlib
import pickle
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fluxedit.service.keys import KeyRing
from fluxedit.service.loras import LoraStore
from fluxedit.service.retention import Retention
from fluxedit.store.database import open_database
from fluxedit.store.files import FileStore, StoredBytesMismatch
from fluxedit.store.s3_objects import S3Location, S3Objects, StoreUnavailable
from fluxedit.store.s3_reader import S3StoreReader
from tests import lora_builders as build
from tests.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures)

PREFIX = "team/fluxedit"


@pytest.fixture
def location(s3_bucket) -> S3Location:  # noqa: F811
    return S3Location.parse(f"s3://{s3_bucket.name}/{PREFIX}/", s3_bucket.endpoint, s3_bucket.region)


@pytest.fixture
def files(tmp_path, location) -> FileStore:
    sessions = open_database(f"sqlite:///{tmp_path / 'fluxedit.db'}")
    return FileStore(S3Objects(location.child("files")), sessions)


def put(files: FileStore, data: bytes, purpose: str = "upload", owner: str | None = None):
    return files.put(data, purpose=purpose, content_type="image/png", filename="a.png", owner_key_id=owner)


def test_an_s3_address_names_a_bucket_and_a_prefix():
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b/")
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/a").child("files").url == "s3://bucket/a/files/"
    for bad in ("s3:///prefix", "bucket/prefix", "/local/folder"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            S3Location.parse(bad)


def test_the_backend_puts_gets_streams_lists_and_deletes_under_its_prefix(s3_bucket, location):  # noqa: F811
    objects = S3Objects(location.child("files"))
    data = secrets.token_bytes(3 * 2**20 + 5)  # several chunks
    objects.put("ab/file_xab", data)
    assert s3_bucket.objects() == {f"{PREFIX}/files/ab/file_xab": len(data)}  # nothing outside the prefix
    assert objects.get("ab/file_xab") == data
    assert b"".join(objects.chunks("ab/file_xab")) == data
    assert objects.exists("ab/file_xab") and objects.size("ab/file_xab") == len(data)
    assert [(entry.key, entry.size) for entry in objects.listing()] == [("ab/file_xab", len(data))]
    before = objects.modified("ab/file_xab")
    time.sleep(1.1)  # S3 keeps whole seconds
    objects.touch("ab/file_xab")
    assert objects.modified("ab/file_xab") > before and objects.get("ab/file_xab") == data

    objects.delete("ab/file_xab")
    objects.delete("ab/file_xab")  # gone already: nothing happens
    assert not objects.exists("ab/file_xab") and objects.size("ab/file_xab") is None and s3_bucket.objects() == {}
    with pytest.raises(FileNotFoundError, match=f"s3://{s3_bucket.name}/{PREFIX}/files/ab/file_xab"):
        objects.get("ab/file_xab")
    with pytest.raises(FileNotFoundError):
        next(objects.chunks("ab/file_xab"))


def test_a_store_that_cannot_be_reached_is_an_os_error_naming_the_object(location):
    unreachable = S3Location(location.bucket, location.prefix, "http://127.0.0.1:9", location.region)
    with pytest.raises(StoreUnavailable, match=f"s3://{location.bucket}/{PREFIX}/files/ab/x"):
        S3Objects(unreachable.child("files")).get("ab/x")


def test_inputs_are_stored_once_per_key_and_outputs_always_anew(s3_bucket, files):  # noqa: F811
    data = secrets.token_bytes(100)
    keys = KeyRing(files.sessions)
    mine, theirs = (keys.create(name).record.id for name in ("mine", "theirs"))
    first, again = put(files, data, owner=mine), put(files, data, purpose="input", owner=mine)
    other_key = put(files, data, owner=theirs)
    outputs = [put(files, data, purpose="output") for _ in range(2)]
    assert again.id == first.id  # content-addressed per key
    assert other_key.id != first.id and outputs[0].id != outputs[1].id
    stored = s3_bucket.objects(f"{PREFIX}/files/")
    assert sorted(stored) == sorted(f"{PREFIX}/files/{r.id[-2:]}/{r.id}" for r in (first, other_key, *outputs))
    assert files.read(first.id) == data and b"".join(files.chunks(outputs[1].id)) == data
    assert files.local_path(first.id) is None and files.folder is None

    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/files/{first.id[-2:]}/{first.id}")
    assert put(files, data, owner=mine).id == first.id and files.read(first.id) == data  # the lost bytes again

    files.delete(outputs[0].id)
    assert files.get(outputs[0].id) is None and not files.has_bytes(outputs[0].id)
    assert f"{PREFIX}/files/{outputs[0].id[-2:]}/{outputs[0].id}" not in s3_bucket.objects()


def test_the_worker_reader_pickles_reads_by_id_and_refuses_changed_bytes_naming_the_file(s3_bucket, files, location):  # noqa: F811
    data = secrets.token_bytes(200)
    record = put(files, data)
    reader = pickle.loads(pickle.dumps(S3StoreReader.of(location)))  # as a worker process or Ray actor gets it
    assert reader == S3StoreReader(s3_bucket.name, f"{PREFIX}/", s3_bucket.endpoint, s3_bucket.region)
    assert reader.read_file(record.id, size=record.size, sha256=record.sha256) == data

    key = f"{PREFIX}/files/{record.id[-2:]}/{record.id}"
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key=key, Body=data[:-1] + b"!")  # same size, other bytes
    with pytest.raises(StoredBytesMismatch, match=record.id):
        reader.read_file(record.id, size=record.size, sha256=record.sha256)
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key=key, Body=data + b"more")
    with pytest.raises(StoredBytesMismatch, match=record.id):
        reader.read_file(record.id, size=record.size)
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=key)
    with pytest.raises(FileNotFoundError, match=record.id):
        reader.read_file(record.id, size=record.size, sha256=record.sha256)


def test_a_lora_is_kept_in_the_bucket_and_a_worker_downloads_it_once_by_digest(tmp_path, s3_bucket, location):  # noqa: F811
    sessions = open_database(f"sqlite:///{tmp_path / 'fluxedit.db'}")
    store = LoraStore(tmp_path / "staging", sessions, 2**30, 2**30, objects=S3Objects(location.child("loras")))
    written = build.write(build.diffusers_lora(seed=3), tmp_path / "staging" / "upload.partial")
    content = written.read_bytes()
    sha256, size = store.add(written, "lora", kept=True)
    assert sha256 == hashlib.sha256(content).hexdigest() and size == len(content)
    assert s3_bucket.objects(f"{PREFIX}/loras/") == {f"{PREFIX}/loras/{sha256}.safetensors": size}
    assert list((tmp_path / "staging").iterdir()) == []  # written and checked here, kept in the bucket
    assert store.location(sha256) == f"s3://{s3_bucket.name}/{PREFIX}/loras/{sha256}.safetensors"

    reader = S3StoreReader.of(location, cache=str(tmp_path / "worker-cache"))
    path = reader.lora_path(sha256)
    assert path.read_bytes() == content and path.parent == tmp_path / "worker-cache"
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/loras/{sha256}.safetensors")
    assert reader.lora_path(sha256) == path  # cached by digest: no second download

    changed = S3StoreReader.of(location, cache=str(tmp_path / "other-cache"))
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/loras/{sha256}.safetensors", Body=b"x" * 64)
    with pytest.raises(StoredBytesMismatch, match=sha256):
        changed.lora_path(sha256)
    assert list((tmp_path / "other-cache").iterdir()) == []  # nothing unchecked is left for a later load


def test_a_presigned_url_serves_the_bytes_and_says_when_it_expires(files):
    data = secrets.token_bytes(300)
    record = put(files, data, purpose="output")
    url = files.presigned_url(record, 120, filename="shoe.png")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/png" and "shoe.png" in response.headers["content-disposition"]
    # A SigV4 URL whose signature covers its expiry: S3 refuses it after that (moto's server does not check).
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["120"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60


def test_retention_deletes_expired_objects_and_leftovers_without_a_record(tmp_path, s3_bucket, files, location):  # noqa: F811
    old, kept = put(files, secrets.token_bytes(64), purpose="output"), put(files, secrets.token_bytes(64))
    stray = f"{PREFIX}/files/zz/file_strayzz"  # bytes whose record was never written (a crash between the two)
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key=stray, Body=b"x" * 10)
    retention = Retention(
        files.sessions, files, tmp_path / "trainings", tmp_path / "lora-staging",
        retain_inputs=None, retain_outputs=30 * 86400.0, retain_trainings=None,
        lora_objects=S3Objects(location.child("loras")),
    )  # fmt: skip

    expired = retention.expire(datetime.now(UTC) + timedelta(days=31))
    assert expired.file_ids == [old.id] and expired.report.leftovers == 1  # the stray is a day old by then
    assert files.get(old.id) is None and files.has_bytes(old.id)  # record first; bytes after the read grace
    retention.remove(expired)
    assert sorted(s3_bucket.objects(f"{PREFIX}/files/")) == [f"{PREFIX}/files/{kept.id[-2:]}/{kept.id}"]
