"""The server's services run in this test's own event loop, on an in-process pool (fake_pool.py): the runner's
seam tests and its hardening tests share this harness."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

from fluxedit.config import Settings
from fluxedit.schema import EditInput, Status
from fluxedit.service.keys import Caller
from fluxedit.service.services import Services
from fluxedit.store.files import LocalStoreReader
from tests.helpers import encoded, pattern
from tests.service.fake_pool import InProcessPool

PHOTO = encoded(pattern(96, 64), "PNG")
PHOTO_URI = "data:image/png;base64," + base64.b64encode(PHOTO).decode()
NOBODY = Caller(None, "")


def life(data_dir, scenario, pool_class=InProcessPool, stop: bool = True, **settings) -> None:
    """One run of the server's services on `data_dir`; without `stop`, it ends as a killed server does: nothing
    of the shutdown runs, the rows stay as they were (or the scenario stops the services itself)."""

    async def main() -> None:
        services = Services.build(Settings(data_dir=data_dir, **settings))
        pool = pool_class(LocalStoreReader(services.files.folder, services.loras.folder))
        services.pool = pool
        services.runner.attach_pool(pool)
        await services.start()
        try:
            await scenario(services, pool)
        finally:
            if stop:
                await services.stop()

    asyncio.run(main())


async def create(services: Services, **fields):
    edit_input = EditInput(prompt="make it blue", image_url=PHOTO_URI, **fields)
    return await services.runner.create(NOBODY, edit_input, base_url="http://test", own_hosts=set())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most 5 s) for `condition`, which the loop's other tasks make true."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within 5 s")


async def running(services: Services, prediction_id: str) -> None:
    await until(lambda: services.runner.get(prediction_id).status == Status.processing, f"{prediction_id} runs")
