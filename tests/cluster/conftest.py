"""The Ray cluster tests: a head and worker nodes on this machine, inside a network namespace that has only
loopback, so Ray's nodes bind 127.0.0.1 and nothing leaves the machine.

tests/cluster/run_in_netns.sh (as root; `make test` runs it) makes the namespace, runs `pytest -m cluster
tests/cluster` inside it and removes it. Run any other way, these tests skip, saying why; with
FLUXEDIT_REQUIRE_CLUSTER=1 (CI) they fail instead.
"""

from __future__ import annotations

import os

import pytest

from tests.cluster.ray_cluster import TestCluster
from tests.service.server import free_port

NETNS = os.environ.get("FLUXEDIT_CLUSTER_NETNS")
REQUIRED = os.environ.get("FLUXEDIT_REQUIRE_CLUSTER") == "1"


def why_no_cluster() -> str | None:
    if not NETNS:
        return "the Ray cluster tests run inside a loopback-only network namespace: tests/cluster/run_in_netns.sh"
    try:
        import ray.cluster_utils  # noqa: F401
    except ImportError:
        return "ray is not installed: pip install -e '.[test]'"
    return None


def start_cluster(worker_nodes: int, client_port: int | None = None) -> TestCluster:
    why = why_no_cluster()
    if why:
        if REQUIRED:
            pytest.fail(f"FLUXEDIT_REQUIRE_CLUSTER=1, but {why}")
        pytest.skip(why)
    return TestCluster(worker_nodes, client_port)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = start_cluster(2)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes_with_client():
    """Two GPU nodes, and the head's Ray Client server on a free loopback port (`client_address`)."""
    cluster = start_cluster(2, client_port=free_port())
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def one_node():
    cluster = start_cluster(1)
    yield cluster
    cluster.shutdown()
