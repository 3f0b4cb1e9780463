"""Everything one running service holds, built from Settings, started and stopped together.

On PostgreSQL several replicas may run on one database: each takes requests, but only the leader starts the
worker pool, the runner's dispatching and recovery, the batches' recovery and the retention sweeper, when it takes
the lead (service/leader.py). On SQLite the one replica leads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from ..config import Settings
from ..store.database import open_database
from ..store.files import FileStore
from ..store.objects_setup import Storage
from ..worker.pool_protocol import WorkerPool
from ..worker.pools import make_pool
from .admission import BatchLimits
from .batch_ends import BatchEnds
from .batches import Batches
from .events import EventHub
from .fetch import UrlPolicy
from .inputs import InputResolver
from .keys import KeyRing
from .leader import PgReplica, SharedWake, SingleReplica, replica_for
from .lora_resolver import LoraResolver
from .loras import LoraStore
from .metrics import ServiceMetrics
from .notify import PredictionWebhooks
from .quota import StorageQuota
from .retention import Retention, sweep_forever
from .runner import Runner
from .status_effects import subscribe_batch_effects
from .trainings import TrainingRunner
from .webhook_schedule import RetrySchedule
from .webhooks import WebhookSender


@dataclass
class Services:
    settings: Settings
    sessions: object
    files: FileStore
    keys: KeyRing
    hub: EventHub
    metrics: ServiceMetrics
    runner: Runner
    pool: WorkerPool
    sender: WebhookSender
    policy: UrlPolicy
    loras: LoraStore
    trainings: TrainingRunner
    quota: StorageQuota | None = None
    retention: Retention | None = None
    batches: Batches | None = None
    replica: SingleReplica | PgReplica = field(default_factory=SingleReplica)  # PgReplica: leads or follows
    _sweeper: asyncio.Task | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        sessions = open_database(settings.resolved_database_url)
        quota = StorageQuota.from_settings(settings, sessions)
        storage = Storage.from_settings(settings)  # a local folder, or S3 (--storage)
        files = FileStore(storage.files(), sessions, quota)
        policy = UrlPolicy(allow_private=settings.allow_private_urls, allowed_networks=tuple(settings.allowed_networks))
        keys = KeyRing(sessions)
        hub = EventHub()
        metrics = ServiceMetrics()
        sender = WebhookSender(
            sessions,
            policy,
            RetrySchedule(settings.webhook_retry_base, settings.webhook_retry_max_delay, settings.webhook_retry_window),
            max_concurrent=settings.webhook_concurrency,
            timeout_s=settings.webhook_timeout,
        )
        loras = LoraStore(
            storage.lora_staging(settings.data_dir), sessions, settings.lora_max_bytes, settings.lora_cache_bytes,
            quota, storage.loras(),
        )  # fmt: skip
        trainings = TrainingRunner(
            sessions,
            settings.data_dir / "trainings",
            loras,
            hub,
            settings.training_slice_steps,
            keep_checkpoints=settings.training_keep_checkpoints,
            quota=quota,
            files=files,
        )
        runner = Runner(
            sessions,
            files,
            InputResolver(files, policy),
            keys,
            hub,
            metrics,
            PredictionWebhooks(sender, files),
            price_per_image=settings.price_per_image,
            max_queue=settings.max_queue,
            max_queue_per_key=settings.max_queue_per_key,
            rate_limit=settings.rate_limit,
            rate_limit_burst=settings.rate_limit_burst,
            execution_timeout=settings.execution_timeout,
            batch_max=settings.batch_max,
            batch_wait=settings.batch_wait,
            lora_resolver=LoraResolver(loras, policy, settings.lora_dirs, settings.token),
            trainings=trainings,
            cancel_grace=settings.cancel_grace,
            wake=SharedWake(),
        )
        reader = storage.reader()  # the workers read inputs and LoRAs by id from the store, wherever it is
        pool = make_pool(settings, settings.engine_config(), reader)  # local processes, or Ray actors
        runner.attach_pool(pool)
        batches = Batches(
            runner, BatchLimits(settings.max_batch_images, settings.max_batch_queue), settings.price_per_image
        )
        subscribe_batch_effects(runner.context.lifecycle, BatchEnds(sender))  # a batch ends with its last prediction
        retention = Retention.from_settings(settings, sessions, files, quota)
        replica = replica_for(settings.resolved_database_url)
        replica.wire(hub, runner)
        return cls(
            settings, sessions, files, keys, hub, metrics, runner, pool, sender, policy, loras, trainings,
            quota=quota, retention=retention, batches=batches, replica=replica,
        )  # fmt: skip

    async def start(self) -> None:
        await self.sender.start()
        await self.replica.start(self._lead)

    async def _lead(self) -> None:
        """This replica dispatches from now on: the workers, recovery, batches' fetches, the sweeper."""
        await self.pool.start()
        await self.runner.start()
        if self.batches is not None:
            self.batches.recover()
        if self.settings.retention_sweep_interval:
            self._sweeper = asyncio.create_task(sweep_forever(self.retention, self.settings.retention_sweep_interval))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.replica.leading:
            await self.runner.stop(self.settings.drain_timeout)
            await self.pool.close()
        await self.replica.stop()  # the leader lock goes last: what it drained is queued again by then
        await self.sender.stop()
