"""The runner needs nothing of a pool but the WorkerPool protocol: it runs predictions on a pool that works
in this process, and that pool gets every input by file-store id, never by a path."""

from __future__ import annotations

import asyncio
import base64

from sqlalchemy import select

from fluxedit.config import Settings
from fluxedit.schema import EditInput, Status
from fluxedit.service.keys import Caller
from fluxedit.service.services import Services
from fluxedit.store.files import LocalStoreReader
from fluxedit.store.models import StoredFile
from tests.helpers import encoded, pattern
from tests.service.fake_pool import InProcessClusterPool, InProcessPool

PHOTO = encoded(pattern(96, 64), "PNG")
PHOTO_URI = "data:image/png;base64," + base64.b64encode(PHOTO).decode()
NOBODY = Caller(None, "")


def run(tmp_path, scenario, pool_type=InProcessPool, **settings) -> None:
    async def main() -> None:
        services = Services.build(Settings(data_dir=tmp_path / "data", **settings))
        pool = pool_type(LocalStoreReader(services.files.folder, services.loras.folder))
        services.pool = pool
        services.runner.attach_pool(pool)
        await services.start()
        try:
            await scenario(services, pool)
        finally:
            await services.stop()

    asyncio.run(main())


async def create(services: Services, **fields):
    edit_input = EditInput(prompt="make it blue", image_url=PHOTO_URI, **fields)
    return await services.runner.create(NOBODY, edit_input, base_url="http://test", own_hosts=set())


def test_a_prediction_runs_to_success_on_a_pool_that_only_implements_the_protocol(tmp_path):
    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        ended = await services.runner.wait(prediction.id, 10)
        assert ended.status == Status.success, ended.logs
        assert pool.read == [prediction.input_files[0]]  # the job named its input by id
        job = pool.submitted[0]
        stored = services.files.get(job.images[0].id)
        assert (job.images[0].size, job.images[0].sha256) == (stored.size, stored.sha256)
        assert services.files.read(ended.output[0]) == PHOTO  # the pool's output was stored as the result
        assert "ran here" in ended.logs
        assert [w.state for w in services.pool.workers()] == ["ready"]

    run(tmp_path, scenario)


def test_a_running_prediction_is_cancelled_through_the_protocol(tmp_path):
    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        for _ in range(200):
            if services.runner.get(prediction.id).status == Status.processing:
                break
            await asyncio.sleep(0.01)
        await services.runner.cancel(prediction.id)
        ended = await services.runner.wait(prediction.id, 10)
        assert ended.status == Status.cancelled
        assert "cancelled while running" in ended.logs
        follow_up = await services.runner.wait((await create(services)).id, 10)  # the worker is free again
        assert follow_up.status == Status.success

    run(tmp_path, scenario)


def test_a_stop_stores_a_result_the_worker_handed_over_before_it_stopped(tmp_path, monkeypatch):
    """The pool is idle the moment a worker hands its result over; storing it takes a while (a large PNG, an
    S3 upload). A stop in that window used to cancel the storing: the edit was lost and stayed processing."""
    from fluxedit.service.results import Results

    stored = Results.finish

    async def slow_finish(self, prediction_id, result):
        await asyncio.sleep(0.5)
        await stored(self, prediction_id, result)

    monkeypatch.setattr(Results, "finish", slow_finish)

    async def main() -> None:
        services = Services.build(Settings(data_dir=tmp_path / "data", drain_timeout=5))
        pool = InProcessPool(LocalStoreReader(services.files.folder, services.loras.folder))
        services.pool = pool
        services.runner.attach_pool(pool)
        await services.start()
        prediction = await create(services)
        for _ in range(200):
            if pool.submitted and not pool.busy_job_ids():
                break  # the worker is done; its result is being stored
            await asyncio.sleep(0.01)
        assert services.runner.get(prediction.id).status == Status.processing
        await services.stop()
        ended = services.runner.get(prediction.id)
        assert ended.status == Status.success, ended.logs
        assert services.files.read(ended.output[0]) == PHOTO

    asyncio.run(main())


def test_the_queue_depth_gauge_counts_what_waits_whenever_it_is_read(tmp_path):
    def depth(services: Services) -> float:
        return services.metrics.registry.get_sample_value("fluxedit_queue_depth")

    async def scenario(services: Services, pool: InProcessPool) -> None:
        running = await create(services)
        pool.hold.add(running.id)
        for _ in range(200):
            if services.runner.get(running.id).status == Status.processing:
                break
            await asyncio.sleep(0.01)
        waiting = [await create(services, seed=seed) for seed in (1, 2)]
        assert depth(services) == 2  # the worker is busy: both wait
        await services.runner.cancel(waiting[0].id)
        assert depth(services) == 1
        await services.runner.cancel(running.id)
        assert (await services.runner.wait(waiting[1].id, 10)).status == Status.success
        assert depth(services) == 0

    run(tmp_path, scenario)


def test_a_result_that_arrives_after_its_prediction_ended_is_not_stored(tmp_path):
    """A worker's last step can finish just as the prediction ends another way (its execution timeout, a
    cancel): the late result changes nothing, and its image is not left behind in the store."""

    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        for _ in range(200):
            if services.runner.get(prediction.id).status == Status.processing:
                break
            await asyncio.sleep(0.01)
        services.runner.context.lifecycle.fail(prediction.id, "EXECUTION_TIMEOUT", "it ran longer than 1 s")
        pool.finish_held(prediction.id)
        await services.runner.context.wait_finishing(10)
        ended = services.runner.get(prediction.id)
        assert (ended.status, ended.error_code, ended.output) == (Status.error, "EXECUTION_TIMEOUT", None)
        with services.files.sessions() as session:
            outputs = session.scalars(select(StoredFile).where(StoredFile.purpose == "output")).all()
        assert outputs == []
        follow_up = await services.runner.wait((await create(services)).id, 10)  # the worker is free again
        assert follow_up.status == Status.success

    run(tmp_path, scenario)


def test_a_cluster_pool_is_asked_for_a_worker_per_batch_that_waits_not_per_prediction(tmp_path):
    """Each Ray worker is a GPU: with batches of 4, nine waiting predictions need three more, not nine."""

    async def scenario(services: Services, pool: InProcessClusterPool) -> None:
        running = await create(services)
        pool.hold.add(running.id)
        for _ in range(200):
            if services.runner.get(running.id).status == Status.processing:
                break
            await asyncio.sleep(0.01)
        for seed in range(9):
            await create(services, seed=seed)
        for _ in range(200):
            if pool.asked and pool.asked[-1] == 3:
                break
            await asyncio.sleep(0.01)
        assert pool.asked[-1] == 3, pool.asked
        await services.runner.cancel(running.id)

    run(tmp_path, scenario, InProcessClusterPool, batch_max=4)
