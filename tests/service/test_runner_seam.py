"""The runner needs nothing of a pool but the WorkerPool protocol: it runs predictions on a pool that works
in this process, and that pool gets every input by file-store id, never by a path."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from fluxedit.schema import Status
from fluxedit.service.services import Services
from fluxedit.store.models import StoredFile
from tests.service.fake_pool import InProcessClusterPool, InProcessPool
from tests.service.in_process import PHOTO, create, life, running, until


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

    life(tmp_path / "data", scenario)


def test_a_running_prediction_is_cancelled_through_the_protocol(tmp_path):
    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        await running(services, prediction.id)
        await services.runner.cancel(prediction.id)
        ended = await services.runner.wait(prediction.id, 10)
        assert ended.status == Status.cancelled
        assert "cancelled while running" in ended.logs
        follow_up = await services.runner.wait((await create(services)).id, 10)  # the worker is free again
        assert follow_up.status == Status.success

    life(tmp_path / "data", scenario)


def test_a_stop_stores_a_result_the_worker_handed_over_before_it_stopped(tmp_path, monkeypatch):
    """The pool is idle the moment a worker hands its result over; storing it takes a while (a large PNG, an
    S3 upload). A stop in that window used to cancel the storing: the edit was lost and stayed processing."""
    from fluxedit.service.results import Results

    stored = Results.finish

    async def slow_finish(self, prediction_id, result):
        await asyncio.sleep(0.5)
        await stored(self, prediction_id, result)

    monkeypatch.setattr(Results, "finish", slow_finish)

    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        await until(lambda: pool.submitted and not pool.busy_job_ids(), "the worker is done")  # storing now
        assert services.runner.get(prediction.id).status == Status.processing
        await services.stop()
        ended = services.runner.get(prediction.id)
        assert ended.status == Status.success, ended.logs
        assert services.files.read(ended.output[0]) == PHOTO

    life(tmp_path / "data", scenario, stop=False, drain_timeout=5)


def test_the_queue_depth_gauge_counts_what_waits_whenever_it_is_read(tmp_path):
    def depth(services: Services) -> float:
        return services.metrics.registry.get_sample_value("fluxedit_queue_depth")

    async def scenario(services: Services, pool: InProcessPool) -> None:
        busy = await create(services)
        pool.hold.add(busy.id)
        await running(services, busy.id)
        waiting = [await create(services, seed=seed) for seed in (1, 2)]
        assert depth(services) == 2  # the worker is busy: both wait
        await services.runner.cancel(waiting[0].id)
        assert depth(services) == 1
        await services.runner.cancel(busy.id)
        assert (await services.runner.wait(waiting[1].id, 10)).status == Status.success
        assert depth(services) == 0

    life(tmp_path / "data", scenario)


def test_a_result_that_arrives_after_its_prediction_ended_is_not_stored(tmp_path):
    """A worker's last step can finish just as the prediction ends another way (its execution timeout, a
    cancel): the late result changes nothing, and its image is not left behind in the store."""

    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        await running(services, prediction.id)
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

    life(tmp_path / "data", scenario)


def test_a_cluster_pool_is_asked_for_a_worker_per_batch_that_waits_not_per_prediction(tmp_path):
    """Each Ray worker is a GPU: with batches of 4 images, five alike predictions make two batches, two that
    run 3 steps a third, and one of 4 images a fourth: four workers, not eight (one per prediction), nor
    two (the predictions over the batch size, as if all could share)."""

    async def scenario(services: Services, pool: InProcessClusterPool) -> None:
        busy = await create(services)
        pool.hold.add(busy.id)
        await running(services, busy.id)
        for seed in range(5):
            await create(services, seed=seed)
        for seed in range(2):
            await create(services, seed=seed, num_inference_steps=3)
        await create(services, num_images=4)
        await until(lambda: pool.asked and pool.asked[-1] == 4, f"4 workers asked for (asked {pool.asked})")
        await services.runner.cancel(busy.id)

    life(tmp_path / "data", scenario, InProcessClusterPool, batch_max=4)


@pytest.mark.parametrize("meanwhile", ["ended", "re-queued"])
def test_a_prediction_that_ends_or_is_requeued_while_its_result_is_stored_keeps_no_output(
    tmp_path, monkeypatch, meanwhile
):
    """The images are being written (seconds, to S3) when a timeout ends the prediction, or a new leader's
    recovery queues it again: it must not become a success, and the images written for it are deleted."""
    from fluxedit.store.files import FileStore

    writing, written = asyncio.Event(), []
    store_outputs = FileStore.put_outputs

    def slow_put_outputs(self, images, **fields):
        records = store_outputs(self, images, **fields)
        written.extend(record.id for record in records)
        loop.call_soon_threadsafe(writing.set)
        time.sleep(0.3)  # the upload's last part
        return records

    monkeypatch.setattr(FileStore, "put_outputs", slow_put_outputs)

    async def scenario(services: Services, pool: InProcessPool) -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        prediction = await create(services)
        await asyncio.wait_for(writing.wait(), 10)
        lifecycle = services.runner.context.lifecycle
        if meanwhile == "ended":
            lifecycle.fail(prediction.id, "EXECUTION_TIMEOUT", "it ran longer than 1 s")
        else:
            lifecycle.change(prediction.id, Status.created, log_line="re-queued: the server stopped while it ran")
            pool.hold.add(prediction.id)  # its second run does not end before the late result is handled
        await services.runner.context.wait_finishing(10)
        row = services.runner.get(prediction.id)
        assert row.status != Status.success and not row.output
        assert written and all(services.files.get(file_id) is None for file_id in written)
        assert all(not services.files.has_bytes(file_id) for file_id in written)

    loop = None
    life(tmp_path / "data", scenario)


def test_the_metrics_still_answer_while_the_database_cannot_count_the_queue(tmp_path):
    from prometheus_client import generate_latest
    from sqlalchemy.exc import OperationalError

    def unreachable():
        raise OperationalError("SELECT count(*)", {}, Exception("could not connect to server"))

    async def scenario(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        await running(services, prediction.id)
        await create(services, seed=3)  # waits behind it
        gauge = services.runner.queue_gauge
        assert gauge.count() == 1
        gauge.sessions = unreachable
        exposition = generate_latest(services.metrics.registry).decode()
        assert "fluxedit_queue_depth 1.0" in exposition  # the last count, and every other figure
        assert "fluxedit_predict_seconds_bucket" in exposition
        await services.runner.cancel(prediction.id)

    life(tmp_path / "data", scenario)
