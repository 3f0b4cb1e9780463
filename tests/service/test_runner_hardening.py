"""The runner's hardening, through the WorkerPool protocol (tests/service/fake_pool.py): a worker that ignores a
cancel is killed after FLUXEDIT_CANCEL_GRACE and the prediction ends cancelled; a prediction the server stopped
during twice fails with WORKER_LOST instead of running a third time (docs/operations.md)."""

from __future__ import annotations

from fluxedit.schema import Status
from fluxedit.service.runner import MAX_ATTEMPTS
from fluxedit.service.services import Services
from fluxedit.store.files import LocalStoreReader
from fluxedit.worker.messages import Died, WorkerState
from tests.service.fake_pool import InProcessPool
from tests.service.in_process import create, life, running


class DeafPool(InProcessPool):
    """Its held jobs ignore a cancel; a kill ends the worker as the real pool reports it: Died, then restarted."""

    def __init__(self, reader: LocalStoreReader):
        super().__init__(reader)
        self.cancels: list[str] = []
        self.killed: list[str] = []

    def cancel(self, job_id: str) -> None:
        self.cancels.append(job_id)  # heard, and ignored

    def kill(self, job_id: str) -> None:
        self.killed.append(job_id)
        name = next(name for name in self.names if job_id in self.running[name])
        jobs, self.running[name] = tuple(self.running[name]), []
        self.hold.difference_update(jobs)
        self.states[name] = WorkerState.starting
        self._emit(name, Died(-9, jobs))
        self.states[name] = WorkerState.ready


def test_a_worker_that_ignores_a_cancel_is_killed_after_the_grace_and_the_prediction_ends_cancelled(tmp_path):
    async def scenario(services: Services, pool: DeafPool) -> None:
        prediction = await create(services)
        pool.hold.add(prediction.id)
        await running(services, prediction.id)
        await services.runner.cancel(prediction.id)
        assert pool.cancels == [prediction.id] and pool.killed == []  # asked first, not killed at once
        ended = await services.runner.wait(prediction.id, 10)
        assert pool.killed == [prediction.id]
        assert ended.status == Status.cancelled, ended.logs  # the user's cancel, not a lost worker
        assert "cancelled while running" in ended.logs
        follow_up = await services.runner.wait((await create(services)).id, 10)  # the restarted worker runs on
        assert follow_up.status == Status.success

    life(tmp_path / "data", scenario, DeafPool, cancel_grace=0.2)


def test_a_prediction_interrupted_by_two_server_stops_fails_with_worker_lost(tmp_path):
    data = tmp_path / "data"
    made: list[str] = []

    async def first(services: Services, pool: InProcessPool) -> None:
        prediction = await create(services)
        made.append(prediction.id)
        pool.hold.add(prediction.id)
        await running(services, prediction.id)

    async def again(services: Services, pool: InProcessPool) -> None:
        # Re-queued at start: it runs once more (held again: the server dies during it a second time).
        pool.hold.add(made[0])
        await running(services, made[0])
        assert services.runner.get(made[0]).attempts == MAX_ATTEMPTS == 2

    async def last(services: Services, pool: InProcessPool) -> None:
        ended = services.runner.get(made[0])
        assert ended.status == Status.error and ended.error_code == "WORKER_LOST", ended.logs
        assert "on each of its 2 attempts" in ended.error_message
        assert pool.submitted == []  # not tried a third time

    life(data, first, stop=False)
    life(data, again, stop=False)
    life(data, last)
