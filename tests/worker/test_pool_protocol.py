"""LocalWorkerPool implements the WorkerPool protocol: every method, with the protocol's parameters."""

from __future__ import annotations

import inspect

from fluxedit.config import EngineConfig
from fluxedit.store.files import LocalStoreReader
from fluxedit.worker.messages import WorkerState
from fluxedit.worker.pool import LocalWorkerPool
from fluxedit.worker.pool_protocol import WorkerPool, WorkerView
from tests.service.fake_pool import InProcessPool

MEMBERS = [name for name in dir(WorkerPool) if not name.startswith("_")]


def conforms(pool_type: type) -> None:
    for name in MEMBERS:
        wanted, found = getattr(WorkerPool, name), getattr(pool_type, name, None)
        assert callable(found), f"{pool_type.__name__} has no {name}"
        assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted), name
        assert list(inspect.signature(found).parameters) == list(inspect.signature(wanted).parameters), name


def test_the_local_pool_and_the_in_process_test_pool_have_every_method_of_the_protocol():
    assert {"submit", "submit_training", "cancel", "kill", "workers", "subscribe", "close"} <= set(MEMBERS)
    conforms(LocalWorkerPool)
    conforms(InProcessPool)


def test_a_new_local_pool_is_a_worker_pool_whose_snapshot_shows_each_worker_starting(tmp_path):
    pool = LocalWorkerPool(EngineConfig(device="cpu"), 2, LocalStoreReader(tmp_path / "files", tmp_path / "loras"))
    assert isinstance(pool, WorkerPool)
    workers = pool.workers()
    assert [w.name for w in workers] == ["worker-0", "worker-1"]
    assert all(isinstance(w, WorkerView) and w.state == WorkerState.starting and not w.job_ids for w in workers)
    assert pool.free_worker() is None and pool.busy_job_ids() == []
