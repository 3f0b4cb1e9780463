"""RayWorkerPool has every method of the WorkerPool protocol and of ClusterPool, with their parameters; make_pool
picks it for --workers ray and ray://..., the local pool for a number. No cluster needed (not marked `cluster`)."""

from __future__ import annotations

import inspect

import pytest

from fluxedit.config import EngineConfig, Settings
from fluxedit.store.files import LocalStoreReader
from fluxedit.worker.pool import LocalWorkerPool
from fluxedit.worker.pool_protocol import ClusterPool, WorkerPool
from fluxedit.worker.pools import make_pool, ray_address

pytest.importorskip("ray")
from fluxedit.worker.ray_pool import RayWorkerPool


def test_the_ray_pool_has_every_method_of_both_protocols_and_the_local_pool_is_no_cluster_pool(tmp_path):
    for name in [name for name in dir(ClusterPool) if not name.startswith("_")]:
        wanted, found = getattr(ClusterPool, name), getattr(RayWorkerPool, name, None)
        assert callable(found), f"RayWorkerPool has no {name}"
        assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted), name
        assert list(inspect.signature(found).parameters) == list(inspect.signature(wanted).parameters), name
    reader = LocalStoreReader(tmp_path / "files", tmp_path / "loras")
    ray_pool = RayWorkerPool(EngineConfig(device="cpu"), reader, address="auto")
    assert isinstance(ray_pool, WorkerPool) and isinstance(ray_pool, ClusterPool)
    assert ray_pool.workers() == () and ray_pool.free_worker() is None  # nothing starts before start()
    assert not isinstance(LocalWorkerPool(EngineConfig(device="cpu"), 1, reader), ClusterPool)


def test_make_pool_reads_workers_as_a_number_or_a_ray_address(tmp_path, monkeypatch):
    reader = LocalStoreReader(tmp_path / "files", tmp_path / "loras")
    local = make_pool(Settings(workers="2"), EngineConfig(device="cpu"), reader)
    assert isinstance(local, LocalWorkerPool) and len(local.workers()) == 2
    settings = Settings(workers="ray", min_workers=2, max_workers=4, worker_idle_seconds=30)
    pool = make_pool(settings, EngineConfig(device="cpu"), reader)
    assert isinstance(pool, RayWorkerPool)
    assert (pool.min_workers, pool.max_workers, pool.idle_seconds) == (2, 4, 30)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ray_address("ray") == "10.0.0.5:6379" and ray_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address("ray") == "auto"


@pytest.mark.parametrize("bad", ["rays", "ray://", "-1", "two"])
def test_workers_refuses_what_is_neither_a_number_nor_ray(bad):
    with pytest.raises(ValueError, match="ray://HEAD:PORT"):
        Settings(workers=bad)
