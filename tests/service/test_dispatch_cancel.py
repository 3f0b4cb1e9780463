"""A prediction cancelled after the dispatcher read it from the queue, before it became `starting` (a cancel on
another replica, or on this one's loop between the two), is not handed to a worker: that run would be wasted.
The rest of its batch still runs."""

from __future__ import annotations

import asyncio

from fluxedit.config import Settings
from fluxedit.schema import Status
from fluxedit.service.services import Services
from fluxedit.store.files import LocalStoreReader
from fluxedit.store.models import utcnow
from tests.service.fake_pool import InProcessPool
from tests.service.test_runner_seam import create


def run_with_a_cancel_after_the_claim(tmp_path, count: int, cancelled: set[int]) -> tuple[list, list[str]]:
    """`count` predictions queued while the dispatcher holds off, then dispatched as one batch; those at the
    positions in `cancelled` are cancelled right after the dispatcher read the batch. The ended predictions and
    the ids of the jobs the pool was handed."""
    ended = []

    async def main():
        services = Services.build(Settings(data_dir=tmp_path / "data", batch_max=count))
        pool = InProcessPool(LocalStoreReader(services.files.folder, services.loras.folder))
        services.pool = pool
        services.runner.attach_pool(pool)
        dispatcher = services.runner.dispatcher
        read_batch, gate = dispatcher.next_batch, {"open": False, "cancelled": False}

        def next_batch():
            if not gate["open"]:
                return []  # hold the queue until every prediction is in it
            batch = read_batch()
            if batch and not gate["cancelled"]:  # read: now cancel some, before the dispatcher starts them
                gate["cancelled"] = True
                for position in sorted(cancelled):
                    dispatcher.context.lifecycle.change(
                        batch[position].id, Status.cancelled, completed_at=utcnow(), log_line="cancelled elsewhere"
                    )
            return batch

        dispatcher.next_batch = next_batch
        await services.start()
        try:
            made = [await create(services, seed=1) for _ in range(count)]
            for _ in range(500):  # inputs fetched: all ready to run
                if all(services.runner.get(p.id).inputs_ready for p in made):
                    break
                await asyncio.sleep(0.01)
            gate["open"] = True
            services.runner.context.wake.set()
            ended.extend([await services.runner.wait(p.id, 10) for p in made])
        finally:
            await services.stop()
        return pool

    pool = asyncio.run(main())
    return ended, [job.id for job in pool.submitted]


def test_a_prediction_cancelled_between_the_claim_and_its_start_is_not_run(tmp_path):
    (ended,), submitted = run_with_a_cancel_after_the_claim(tmp_path, 1, {0})
    assert ended.status == Status.cancelled
    assert submitted == []  # no worker run for it
    assert "starting on" not in ended.logs


def test_only_the_cancelled_member_of_a_batch_is_left_out(tmp_path):
    ended, submitted = run_with_a_cancel_after_the_claim(tmp_path, 3, {1})
    assert [p.status for p in ended] == [Status.success, Status.cancelled, Status.success]
    assert submitted == [ended[0].id, ended[2].id]  # one batch of the other two, each run once
    assert "starting on" not in ended[1].logs
