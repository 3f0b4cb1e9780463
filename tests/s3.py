"""A local S3 server for tests: moto's server mode on a free 127.0.0.1 port, one fresh bucket per test.

The code under test talks to it with boto3 exactly as to AWS: an endpoint URL, a region and credentials in the
usual AWS_* variables (set for the test's process by `s3_bucket`, and given to `fluxedit serve` processes
through `S3Bucket.env`). Nothing here reaches beyond loopback.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    name: str
    region: str = REGION

    @property
    def env(self) -> dict[str, str]:
        """The variables an AWS client reads: what a `fluxedit serve` process needs to reach this bucket."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",  # never probe an instance-metadata address for credentials
        }

    def client(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=self.region
        ).client("s3", endpoint_url=self.endpoint)

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix`, with its size."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            found |= {entry["Key"]: entry["Size"] for entry in page.get("Contents", [])}
        return found


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a thread of this process, on a free loopback port; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> S3Bucket:
    """A new, empty bucket; this process's AWS_* variables point at the server for the test's length."""
    bucket = S3Bucket(s3_server, "fluxedit-test-" + secrets.token_hex(6))
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket
