"""The one place a service's worker pool is made: local child processes, or GPU workers on Ray (--workers)."""

from __future__ import annotations

import os

from ..config import EngineConfig, Settings
from .pool import LocalWorkerPool
from .pool_protocol import WorkerPool

INSTALL_HINT = "pip install 'fluxedit[cluster]'"


def ray_address(workers: str) -> str:
    """`ray`: the cluster RAY_ADDRESS names (else one already running on this machine); `ray://HOST:PORT`: Ray
    Client, as given."""
    if workers == "ray":
        return os.environ.get("RAY_ADDRESS") or "auto"
    return workers


def make_pool(settings: Settings, engine_config: EngineConfig, reader) -> WorkerPool:
    """LocalWorkerPool for --workers N (0: one per GPU), RayWorkerPool for --workers ray or ray://HEAD:PORT.
    `reader` is how a worker reads the inputs and LoRAs its jobs name; a Ray actor gets a pickled copy."""
    if isinstance(settings.workers, int):
        return LocalWorkerPool(engine_config, settings.workers, reader)
    try:
        from .ray_pool import RayWorkerPool  # ray is imported only when Ray workers are asked for
    except ImportError as error:
        raise RuntimeError(f"--workers {settings.workers} needs Ray: {INSTALL_HINT}") from error
    return RayWorkerPool(
        engine_config,
        reader,
        address=ray_address(settings.workers),
        min_workers=settings.min_workers,
        max_workers=settings.max_workers,
        idle_seconds=settings.worker_idle_seconds,
    )
