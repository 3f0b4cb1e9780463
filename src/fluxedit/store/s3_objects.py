"""The object backend on S3 (or any S3-compatible store: MinIO, Ceph, R2, ...), through boto3.

Endpoint, region and credentials come the usual AWS ways: AWS_ENDPOINT_URL (or --s3-endpoint-url), AWS_REGION,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role. boto3 is imported only when a store on
S3 is asked for (`pip install 'fluxedit[cluster]'`): the default local folder needs nothing of it.

Every failure of the store (a missing object aside, which is FileNotFoundError) is a StoreUnavailable, an
OSError naming the object and the cause, so callers that handle a local disk's errors handle these too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .objects import CHUNK, PARTIAL, StoredObject

INSTALL_HINT = "pip install 'fluxedit[cluster]'"
MISSING_CODES = ("404", "NoSuchKey", "NotFound")
DEFAULT_REGION = "us-east-1"  # boto3 signs nothing without one; any region works for a custom endpoint


class StoreUnavailable(OSError):
    """The object store could not be reached or refused the request (credentials, permissions, network)."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ("" or ending in "/"), and how to reach them: plain strings, so it pickles."""

    bucket: str
    prefix: str = ""
    endpoint: str = ""  # "": the AWS default (or AWS_ENDPOINT_URL, which boto3 reads itself)
    region: str = ""

    @classmethod
    def parse(cls, url: str, endpoint: str = "", region: str = "") -> S3Location:
        """s3://bucket or s3://bucket/some/prefix; ValueError naming what is wrong otherwise."""
        if not url.startswith("s3://"):
            raise ValueError(f"{url!r} is not an S3 address: use s3://bucket/prefix")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket: use s3://bucket/prefix")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "", endpoint, region)

    def child(self, part: str) -> S3Location:
        return S3Location(self.bucket, f"{self.prefix}{part.strip('/')}/", self.endpoint, self.region)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


_clients: dict[tuple[str, str], object] = {}  # one client per endpoint and region in a process (thread-safe)
_clients_lock = threading.Lock()


def s3_client(endpoint: str = "", region: str = ""):
    """A boto3 S3 client, made once per process (a worker process or Ray actor makes its own)."""
    key = (endpoint, region)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(endpoint, region)
        return _clients[key]


def _new_client(endpoint: str, region: str):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreUnavailable(f"files in S3 need boto3: {INSTALL_HINT}") from None
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    config = Config(
        signature_version="s3v4",  # presigned URLs that expire when they say
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10,
        read_timeout=120,
        # A custom endpoint (MinIO, Ceph, a local test server) is addressed by path: no DNS name per bucket.
        s3={"addressing_style": "path"} if endpoint or os.environ.get("AWS_ENDPOINT_URL") else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


class S3Objects:
    """Objects under one prefix of a bucket. Holds only its location: the client is the process's own."""

    def __init__(self, location: S3Location):
        self.location = location

    @property
    def client(self):
        return s3_client(self.location.endpoint, self.location.region)

    def _key(self, key: str) -> str:
        return self.location.prefix + key

    def describe(self, key: str = "") -> str:
        return f"s3://{self.location.bucket}/{self._key(key)}"

    def _failed(self, key: str, error: Exception) -> OSError:
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError) and str(error.response.get("Error", {}).get("Code")) in MISSING_CODES:
            return FileNotFoundError(f"{self.describe(key)} does not exist")
        return StoreUnavailable(f"{self.describe(key)}: the object store failed ({error})")

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    # ---- writing ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(key), Body=data)
        except self._errors() as error:
            raise self._failed(key, error) from None

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.location.bucket, self._key(key))
        except self._errors() as error:
            raise self._failed(key, error) from None
        path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(key))
        except self._errors() as error:
            raise self._failed(key, error) from None

    def touch(self, key: str) -> None:
        """A copy onto itself with new metadata: S3's way of giving an object a new modification time."""
        source = {"Bucket": self.location.bucket, "Key": self._key(key)}
        try:
            self.client.copy_object(
                Bucket=self.location.bucket, Key=self._key(key), CopySource=source,
                MetadataDirective="REPLACE", Metadata={"touched": f"{time.time():.3f}"},
            )  # fmt: skip
        except self._errors() as error:
            failure = self._failed(key, error)
            if not isinstance(failure, FileNotFoundError):  # gone meanwhile: nothing to mark
                raise failure from None

    # ---- reading ---------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))["Body"].read()
        except self._errors() as error:
            raise self._failed(key, error) from None

    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))["Body"]
        except self._errors() as error:
            raise self._failed(key, error) from None
        with body:
            try:
                yield from body.iter_chunks(size)
            except self._errors() as error:
                raise self._failed(key, error) from None

    def download(self, key: str, target: Path) -> None:
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
        try:
            self.client.download_file(self.location.bucket, self._key(key), str(partial))
            os.replace(partial, target)
        except self._errors() as error:
            raise self._failed(key, error) from None
        finally:
            partial.unlink(missing_ok=True)

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except self._errors() as error:
            failure = self._failed(key, error)
            if isinstance(failure, FileNotFoundError):
                return None
            raise failure from None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else head["ContentLength"]

    def modified(self, key: str) -> float | None:
        head = self._head(key)
        return None if head is None else head["LastModified"].timestamp()

    def listing(self) -> Iterator[StoredObject]:
        start = len(self.location.prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self.location.prefix
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    yield StoredObject(entry["Key"][start:], entry["Size"], entry["LastModified"].timestamp())
        except self._errors() as error:
            raise self._failed("", error) from None

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, seconds: int, content_type: str, filename: str | None) -> str | None:
        params = {"Bucket": self.location.bucket, "Key": self._key(key), "ResponseContentType": content_type}
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{_quoted(filename)}"
        try:
            return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        except self._errors() as error:
            raise self._failed(key, error) from None


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
