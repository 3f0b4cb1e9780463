"""The prediction lifecycle. The runner is the only code that changes a prediction's status.

Every status change goes through `_transition`, which writes the store, wakes
long-pollers and SSE streams, and fires the webhook. The database is the
queue: `created` predictions whose inputs are ready wait there, oldest first,
so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..batching import batch_key
from ..resolution import output_size
from ..schema import MODEL_SLUG, EditInput, FluxeditError, InputDownloadError, InputError, validated_input
from ..store.files import CONTENT_TYPES, EXTENSIONS, FileStore
from ..store.models import ApiKey, Prediction, utcnow
from ..worker.messages import (
    Cancelled,
    Died,
    Done,
    EditJob,
    Failed,
    InputFile,
    JobResult,
    LoadFailed,
    LoraFile,
    Progress,
    Ready,
    Started,
    TrainingEvent,
    WorkerEvent,
    WorkerState,
)
from ..worker.pool_protocol import WorkerPool, WorkerView
from .admission import Admission, price_ceiling
from .events import EventHub
from .fairness import KeyTurns
from .fetch import parse_http_url
from .inputs import InputResolver, stored_input
from .keys import Caller, KeyRing
from .metrics import ServiceMetrics
from .pricing import prediction_cost
from .quota import QuotaExceeded

log = logging.getLogger(__name__)

QUEUED, STARTING, PROCESSING = "created", "starting", "processing"
SUCCESS, ERROR, CANCELLED = "success", "error", "cancelled"
TERMINAL = frozenset({SUCCESS, ERROR, CANCELLED})
RUNNING = frozenset({STARTING, PROCESSING})
MAX_ATTEMPTS = 2  # a prediction interrupted by a server stop runs once more, then fails
CANCEL_GRACE_S = 30.0  # a worker that ignores a cancel this long is killed
VERSION = "1.0"
BATCH_SCAN = 64  # queued predictions of the key whose turn it is looked at when filling a batch
BATCH_KEYS, BATCH_SCAN_PER_KEY = 8, 8  # and of the next keys in turn, to share a batch between keys
GPU_BATCH_IMAGES = 4


class KeyRequired(FluxeditError):
    """A keyless request that reached the queue only after keys came to exist."""


class NoWorkers(FluxeditError):
    """Every worker failed to load the model: nothing could ever run a new prediction."""


class Runner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileStore,
        resolver: InputResolver,
        keys: KeyRing,
        hub: EventHub,
        metrics: ServiceMetrics,
        webhooks,
        *,
        price_per_image: float,
        max_queue: int,
        execution_timeout: float,
        max_queue_per_key: int = 0,
        rate_limit: int = 0,
        rate_limit_burst: int = 0,
        batch_max: int = 1,
        batch_wait: float = 0.0,
        lora_resolver=None,
        trainings=None,
        cancel_grace: float = CANCEL_GRACE_S,
    ):
        self.sessions = sessions
        self.files = files
        self.resolver = resolver
        self.keys = keys
        self.hub = hub
        self.metrics = metrics
        self.webhooks = webhooks
        self.price_per_image = price_per_image
        self.admission = Admission(
            max_queue=max_queue, max_queue_per_key=max_queue_per_key, rate_limit=rate_limit, burst=rate_limit_burst
        )
        self.turns = KeyTurns()  # keys with queued work take turns at the workers
        self.execution_timeout = execution_timeout
        self.batch_max = batch_max  # images one batch may hold; 1 runs every prediction alone; 0: by device
        self.batch_wait = batch_wait  # seconds to hold a batch open for similar work
        self.lora_resolver = lora_resolver
        self.trainings = trainings
        self.cancel_grace = cancel_grace  # seconds a worker may ignore a cancel before it is killed
        self.pool: WorkerPool | None = None  # set by attach_pool: the pool calls back into the runner
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._timed_out: set[str] = set()
        self._cancel_requested: set[str] = set()
        self.draining = False

    def attach_pool(self, pool: WorkerPool) -> None:
        self.pool = pool
        pool.subscribe(self.on_worker_event)

    # ---- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous run left, then start dispatching."""
        with self.sessions() as session:
            interrupted = list(session.scalars(select(Prediction).where(Prediction.status.in_(RUNNING))))
            unprepared = list(
                session.scalars(select(Prediction).where(Prediction.status == QUEUED, ~Prediction.inputs_ready))
            )
        for prediction in interrupted:
            if prediction.attempts >= MAX_ATTEMPTS:
                self._fail(
                    prediction.id,
                    "WORKER_LOST",
                    "the server stopped while this prediction was running, on each of its "
                    f"{prediction.attempts} attempts; it was not tried again",
                )
            else:
                self._transition(prediction.id, QUEUED, log_line="re-queued: the server stopped while it ran")
        for prediction in unprepared:
            self._spawn(self._prepare(prediction.id))
        if self.trainings is not None:
            self.trainings.attach(self.pool, self._wake)
            self.trainings.recover()
        self._refresh_queue_gauge()
        self._dispatcher = asyncio.create_task(self._dispatch_forever())
        self._wake.set()

    async def stop(self, drain_timeout: float) -> None:
        """Drain: running work may finish for `drain_timeout` s, then it is cancelled and re-queued."""
        self.draining = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        deadline = time.monotonic() + drain_timeout
        while self.pool.busy_job_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for job_id in self.pool.busy_job_ids():
            self.pool.cancel(job_id)
        deadline = time.monotonic() + 10
        while self.pool.busy_job_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()

    # ---- creation, cancel, waiting --------------------------------------------------------

    async def create(
        self,
        caller: Caller,
        edit_input: EditInput,
        *,
        base_url: str,
        own_hosts: set[str],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        version: str | None = None,
        webhook_format: str | None = None,
        webhook_events: list[str] | None = None,
        admitted: bool = False,
    ) -> Prediction:
        """Queue a prediction. `admitted`: the caller already ran `admit` for it (before reading its uploads)."""
        if not admitted:
            self.admit(caller, edit_input.num_images)
        if edit_input.loras and self.lora_resolver is None:
            raise InputError("input.loras", "LoRA adapters are not enabled on this server")
        for index, lora in enumerate(edit_input.loras):
            self.lora_resolver.kind(lora.path, f"input.loras.{index}.path", caller)  # unknown names: 422 now
        if webhook_url is not None:
            parse_http_url(webhook_url, "webhook_url")  # an http(s) URL ("Invalid URL." now, not at delivery)
        references = [edit_input.image_url, *edit_input.image_urls]
        fields = ["input.image_url"] + [f"input.image_urls.{i}" for i in range(len(edit_input.image_urls))]
        classified = [self.resolver.classify(r, f, own_hosts) for r, f in zip(references, fields, strict=True)]
        stored = [await self.resolver.store_now(r, f, caller) for r, f in zip(classified, fields, strict=True)]
        prediction = Prediction(
            id=secrets.token_hex(12),
            owner_key_id=caller.key_id,
            model=MODEL_SLUG,
            version=version or VERSION,
            status=QUEUED,
            input=stored_input(edit_input, classified, stored),  # validated; data URIs kept as files only
            input_files=[record.id if record else None for record in stored],
            inputs_ready=all(stored) and not edit_input.loras,  # LoRAs are resolved (maybe fetched) later
            logs="",
            metrics={},
            base_url=base_url.rstrip("/"),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_format=webhook_format,
            webhook_events=webhook_events,
        )
        if all(stored):
            self._price(prediction, stored[0].width, stored[0].height, edit_input)
        else:
            prediction.cost = price_ceiling(edit_input, self.price_per_image)  # reserved; _prepare settles it
        with self.sessions.begin() as session:  # no await from here to the commit: the check holds
            session.add(prediction)
            session.flush()  # the insert takes the write lock first, so the counts see every other create
            self._check_admission(caller, prediction.cost, session, prediction.id)
            if caller.key_id is None and session.scalar(select(ApiKey.id).limit(1)) is not None:
                # The first key appeared while this keyless request was on its way (after the first key's
                # adoption ran): refused, rather than stored without an owner where no view shows it.
                raise KeyRequired("an API key is required: keys were created on this server while this request ran")
            if webhook_url is not None:  # stored with the prediction: its "start" webhook cannot be lost
                self.webhooks.changed(_detached_copy(prediction), None, logged=False, session=session)
        self.hub.publish(prediction.id, {"type": "status", "status": QUEUED})
        if prediction.inputs_ready:
            self._wake.set()
        else:
            self._spawn(self._prepare(prediction.id))
        self._refresh_queue_gauge()
        return prediction

    def admit(self, caller: Caller, num_images: int = 1) -> None:
        """The checks that need no inputs: the rate limit (its token is taken) and the queue and spending limits
        at the least price. A dialect that reads uploads first calls it before, so a refused caller costs nothing."""
        self.admission.take_rate_token(caller)
        self._check_admission(caller, self.price_per_image * num_images)

    def _check_admission(self, caller: Caller, cost: float, session: Session | None = None, new_id=None) -> None:
        """Refuse what cannot or may not run: no worker left, a full queue, a passed spending limit."""
        workers = self.pool.workers()
        if workers and all(w.state == WorkerState.failed for w in workers):
            raise NoWorkers(f"no worker can run predictions: {workers[0].reason}")
        if session is not None:
            self.admission.check(session, caller, cost, new_id)
            return
        with self.sessions() as session:
            self.admission.check(session, caller, cost)

    def _price(self, prediction: Prediction, width: int, height: int, edit_input: EditInput) -> None:
        out_w, out_h = output_size(edit_input.resolution_mode, width, height)
        prediction.width, prediction.height = out_w, out_h
        prediction.cost = prediction_cost(out_w, out_h, edit_input.num_images, self.price_per_image)

    async def cancel(self, prediction_id: str) -> None:
        prediction = self.get(prediction_id)
        if prediction is None or prediction.status in TERMINAL:
            return
        if prediction.status == QUEUED:
            self._transition(prediction_id, CANCELLED, log_line="cancelled before it ran")
            return
        self._cancel_requested.add(prediction_id)
        self.pool.cancel(prediction_id)
        asyncio.get_running_loop().call_later(self.cancel_grace, self._kill_if_still_running, prediction_id)

    def _kill_if_still_running(self, prediction_id: str) -> None:
        if prediction_id not in self.pool.busy_job_ids():
            return
        ending = self._cancel_requested | self._timed_out
        if any(job_id not in ending for job_id in self.pool.batch_of(prediction_id)):
            # Killing the worker would fail the rest of its batch: the cancelled one leaves it at the next step.
            # If the whole batch is stuck, each of the others times out, and then nobody is left to spare.
            asyncio.get_running_loop().call_later(self.cancel_grace, self._kill_if_still_running, prediction_id)
            return
        log.warning("worker ignored the cancel of %s; killing it", prediction_id)
        self.pool.kill(prediction_id)

    async def wait(self, prediction_id: str, timeout: float) -> Prediction | None:
        prediction = self.get(prediction_id)
        if prediction is None or prediction.status in TERMINAL or timeout <= 0:
            return prediction
        await self.hub.wait_finished(prediction_id, timeout)
        return self.get(prediction_id)

    def get(self, prediction_id: str) -> Prediction | None:
        with self.sessions() as session:
            return session.get(Prediction, prediction_id)

    # ---- preparing inputs -----------------------------------------------------------------

    async def _prepare(self, prediction_id: str) -> None:
        prediction = self.get(prediction_id)
        if not self._runnable(prediction):
            return
        edit_input = EditInput(**prediction.input)
        caller = Caller(prediction.owner_key_id, "")
        references = [edit_input.image_url, *edit_input.image_urls]
        fields = ["input.image_url"] + [f"input.image_urls.{i}" for i in range(len(edit_input.image_urls))]
        file_ids = list(prediction.input_files)
        loras = []
        try:
            for index, (ref, field) in enumerate(zip(references, fields, strict=True)):
                if file_ids[index] is None:
                    reference = self.resolver.classify(ref, field, set())
                    file_ids[index] = (await self.resolver.fetch_and_store(reference, field, caller)).id
            for index, lora in enumerate(edit_input.loras):
                field = f"input.loras.{index}.path"
                loras.append((await self.lora_resolver.resolve(lora.path, lora.scale, field, caller)).as_job())
        except InputDownloadError as error:
            self._fail(prediction_id, "INPUT_DOWNLOAD_ERROR", str(error))
            return
        except InputError as error:
            self._fail(prediction_id, "INPUT_VALIDATION_ERROR", str(error))
            return
        except QuotaExceeded as error:  # a fetched input or LoRA that does not fit
            self._fail(prediction_id, error.error_code, f"an input could not be stored: {error}")
            return
        except Exception as error:  # anything unexpected still ends the prediction, never strands it
            log.exception("preparing %s failed", prediction_id)
            reason = f"preparing the inputs failed: {type(error).__name__}: {error}"
            self._fail(prediction_id, "EXECUTION_ERROR", reason)
            return
        main = self.files.get(file_ids[0])
        if main is None:
            self._fail(prediction_id, "INPUT_VALIDATION_ERROR", "input.image_url: the file was deleted before it ran")
            return
        with self.sessions.begin() as session:
            row = session.get(Prediction, prediction_id)
            if row.status != QUEUED:
                return  # cancelled while downloading
            row.input_files = file_ids
            row.lora_files = loras
            row.inputs_ready = True
            self._price(row, main.width, main.height, edit_input)
        self._wake.set()

    # ---- dispatching ----------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch_once()
            except Exception:  # never let one bad row stop all dispatching
                log.exception("dispatching failed; trying again on the next wake-up")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _dispatch_once(self) -> None:
        while self.pool.free_worker() is not None and (batch := self._next_batch()):
            if self.batch_wait > 0 and self._images(batch) < self._batch_limit():
                await asyncio.sleep(self.batch_wait)  # let similar work arrive to share the batch
                batch = self._next_batch()
            worker = self.pool.free_worker()
            if worker is None or not batch:
                break
            self._start(batch, worker)
        self._dispatch_training()

    def _dispatch_training(self) -> None:
        """Give trainings a slice on the workers that predictions leave free."""
        if self.trainings is None or self.draining:
            return
        while (worker := self.pool.free_worker()) is not None and not self._next_batch():
            job = self.trainings.next_slice()
            if job is None:
                return
            self.pool.submit_training(worker.name, job)

    def _next_batch(self) -> list[Prediction]:
        """The oldest ready prediction of the key whose turn it is (self.turns), with others that can share its
        batch (same batch key), taken from the keys in turn order, one each in rounds."""
        with self.sessions() as session:
            oldest = dict(
                session.execute(
                    select(Prediction.owner_key_id, func.min(Prediction.created_at))
                    .where(Prediction.status == QUEUED, Prediction.inputs_ready)
                    .group_by(Prediction.owner_key_id)
                ).all()
            )
            if not oldest:
                return []
            keys = self.turns.order(oldest)
            alone = self._batch_limit() <= 1
            queues = [self._ready_of(session, keys[0], 1 if alone else BATCH_SCAN)]
            if not alone:
                queues += [self._ready_of(session, key, BATCH_SCAN_PER_KEY) for key in keys[1:BATCH_KEYS]]
        if not queues[0]:
            return self._next_batch()  # its first rows could not run and have just been failed: look again
        return queues[0] if alone else self._fill_batch(queues)

    def _ready_of(self, session: Session, key: str | None, limit: int) -> list[Prediction]:
        owned = Prediction.owner_key_id.is_(None) if key is None else Prediction.owner_key_id == key
        query = select(Prediction).where(Prediction.status == QUEUED, Prediction.inputs_ready, owned)
        ready = list(session.scalars(query.order_by(Prediction.created_at, Prediction.id).limit(limit)))
        return [prediction for prediction in ready if self._runnable(prediction)]

    def _runnable(self, prediction: Prediction) -> bool:
        """Whether a queued row's stored input still validates (a row from an older version may not): one that
        does not is failed now, with the reason, instead of stalling the queue on every dispatch."""
        try:
            validated_input(prediction.input, prefix="input.")
        except InputError as error:
            self._fail(prediction.id, "INPUT_VALIDATION_ERROR", f"the stored input is not valid: {error}")
            return False
        return True

    def _fill_batch(self, queues: list[list[Prediction]]) -> list[Prediction]:
        """queues[0][0] and what can join it: one prediction per key and round, the other keys' first (queues[0]
        already has its place), so no key fills a batch while another's fitting work waits."""
        first, limit = queues[0][0], self._batch_limit()
        batch, key = [first], self._batch_key(first)
        in_rounds = queues[1:] + queues[:1]
        fitting = [(p for p in queue if p is not first and self._batch_key(p) == key) for queue in in_rounds]
        while fitting and self._images(batch) < limit:
            for candidates in list(fitting):
                if self._images(batch) >= limit:
                    break
                candidate = next(candidates, None)
                while candidate is not None and self._images(batch) + self._images([candidate]) > limit:
                    candidate = next(candidates, None)  # too many images for what is left: a smaller one may fit
                if candidate is None:
                    fitting.remove(candidates)
                else:
                    batch.append(candidate)
        return batch

    def _batch_key(self, prediction: Prediction) -> tuple:
        """What must match for edits to run as one batch: fluxedit.batching's key, from stored records."""
        edit_input = EditInput(**prediction.input)
        sizes = []
        for file_id in prediction.input_files:
            record = self.files.get(file_id)
            if record is None:
                return (prediction.id,)  # an input deleted while queued: it runs alone (and fails clearly)
            sizes.append((record.width, record.height))
        return batch_key(
            edit_input.resolution_mode,
            sizes,
            edit_input.num_inference_steps,
            edit_input.guidance_scale,
            edit_input.acceleration,
            [(lora["digest"], lora["scale"]) for lora in prediction.lora_files or []],
        )

    def _batch_limit(self) -> int:
        if self.batch_max:
            return self.batch_max
        on_gpu = any(w.on_gpu for w in self.pool.workers())
        return GPU_BATCH_IMAGES if on_gpu else 1

    @staticmethod
    def _images(batch: list[Prediction]) -> int:
        return sum(EditInput(**p.input).num_images for p in batch)

    def _start(self, batch: list[Prediction], worker: WorkerView) -> None:
        for prediction in batch:  # in batch order: the key whose turn it was counts as served first
            self.turns.served(prediction.owner_key_id)
        now = utcnow()
        note = f"starting on {worker.name}" + (f", in a batch of {len(batch)}" if len(batch) > 1 else "")
        jobs = []
        for prediction in batch:
            edit_input = EditInput(**prediction.input)
            queue_time = (now - prediction.created_at).total_seconds()
            self._transition(
                prediction.id,
                STARTING,
                started_at=now,
                attempts=prediction.attempts + 1,
                metrics_update={"queue_time": round(queue_time, 4)},
                log_line=note,
            )
            jobs.append(self._job(prediction, edit_input))
            asyncio.get_running_loop().call_later(self.execution_timeout, self._on_timeout, prediction.id)
        self.pool.submit(worker.name, jobs)
        self._refresh_queue_gauge()

    def _job(self, prediction: Prediction, edit_input: EditInput) -> EditJob:
        fields = ["input.image_url"] + [f"input.image_urls.{i}" for i in range(len(prediction.input_files) - 1)]
        images = []
        for file_id, field in zip(prediction.input_files, fields, strict=True):
            record = self.files.get(file_id)  # None: deleted meanwhile; the worker's read says so
            if record is None:
                images.append(InputFile(file_id, field))
            else:
                images.append(InputFile(file_id, field, record.size, record.sha256, record.content_type))
        return EditJob(
            id=prediction.id,
            settings=edit_input.settings().model_dump(mode="json"),
            images=tuple(images),
            safety_check=edit_input.enable_safety_checker,
            loras=tuple(
                LoraFile(lora["digest"], lora["scale"], lora["field"], None if lora.get("in_store") else lora["path"])
                for lora in prediction.lora_files or []
            ),
        )

    def _on_timeout(self, prediction_id: str) -> None:
        if prediction_id in self.pool.busy_job_ids():
            self._timed_out.add(prediction_id)
            self.pool.cancel(prediction_id)
            asyncio.get_running_loop().call_later(self.cancel_grace, self._kill_if_still_running, prediction_id)

    # ---- worker events ----------------------------------------------------------------------

    def on_worker_event(self, worker: WorkerView, event: WorkerEvent) -> None:
        match event:
            case Ready() | LoadFailed():
                self._update_worker_gauge()
                if isinstance(event, LoadFailed) and all(w.state == WorkerState.failed for w in self.pool.workers()):
                    self._fail_queued(f"no worker can load the model: {event.reason}")
            case Died(exit_code, job_ids):
                self.metrics.worker_restarts.inc()
                self._update_worker_gauge()
                for job_id in job_ids:
                    if job_id.startswith("training_"):
                        self.trainings.on_worker_lost(job_id)
                    else:
                        self._on_lost(job_id, exit_code)
                return
            case Started(job_id):
                self._transition(job_id, PROCESSING)
            case Progress(job_id, step, total, preview):
                self.hub.publish(job_id, {"type": "progress", "step": step, "total": total, "preview": preview})
            case Done(job_id, result):
                self._spawn(self._finish(job_id, result))
            case Failed(job_id, code, message):
                self._fail(job_id, code, message)
            case Cancelled(job_id):
                self._on_cancelled(job_id)
            case _ if isinstance(event, TrainingEvent):
                self.trainings.on_worker_event(event)
                return
        self._wake.set()

    def _fail_queued(self, reason: str) -> None:
        """Nothing will ever run what waits: end it now, with the reason, rather than leave it queued."""
        with self.sessions() as session:
            waiting = list(session.scalars(select(Prediction.id).where(Prediction.status == QUEUED)))
        for prediction_id in waiting:
            self._fail(prediction_id, "MODEL_UNAVAILABLE", reason)

    def _on_lost(self, prediction_id: str, exit_code) -> None:
        if prediction_id in self._timed_out:  # killed because it ignored the timeout's cancel
            self._on_cancelled(prediction_id)
            return
        if prediction_id in self._cancel_requested:  # killed because it ignored a user's cancel
            self._on_cancelled(prediction_id)
            return
        if self.draining:
            self._transition(prediction_id, QUEUED, log_line="re-queued: the server is stopping")
            return
        self._fail(
            prediction_id,
            "WORKER_LOST",
            f"the worker process stopped unexpectedly (exit code {exit_code}) while running this prediction; "
            "it has been restarted, so a new prediction can run",
        )

    def _on_cancelled(self, prediction_id: str) -> None:
        if prediction_id in self._timed_out:
            self._timed_out.discard(prediction_id)
            self._fail(prediction_id, "EXECUTION_TIMEOUT", f"it ran longer than {self.execution_timeout:g} s")
        elif self.draining and prediction_id not in self._cancel_requested:
            prediction = self.get(prediction_id)
            self._transition(
                prediction_id, QUEUED, attempts=prediction.attempts - 1, log_line="re-queued: the server is stopping"
            )
        else:
            self._cancel_requested.discard(prediction_id)
            self._transition(prediction_id, CANCELLED, completed_at=utcnow(), log_line="cancelled while running")

    async def _finish(self, prediction_id: str, result: JobResult) -> None:
        try:
            await self._store_result(prediction_id, result)
        except QuotaExceeded as error:  # the key's or the server's storage quota: say which, and the limit
            self._fail(prediction_id, error.error_code, f"the output could not be stored: {error}")
        except Exception as error:  # e.g. a full disk: the prediction still ends, with the reason
            log.exception("storing the result of %s failed", prediction_id)
            self._fail(prediction_id, "EXECUTION_ERROR", f"storing the result failed: {type(error).__name__}: {error}")

    async def _store_result(self, prediction_id: str, result: JobResult) -> None:
        prediction = self.get(prediction_id)
        flags = result.has_nsfw_concepts
        logs = list(result.logs)
        if flags and all(flags):
            self._fail(prediction_id, "PROVIDER_REJECTED", "the safety checker flagged every output image")
            return
        content_type = CONTENT_TYPES[result.format]
        if self.files.quota is not None:  # all the images fit, or none is stored
            total = sum(len(data) for data in result.images)
            await asyncio.to_thread(self.files.quota.check, prediction.owner_key_id, total)
        output_ids = []
        try:
            for index, data in enumerate(result.images):
                record = await asyncio.to_thread(
                    self.files.put,
                    data,
                    purpose="output",
                    content_type=content_type,
                    filename=f"{prediction_id}-{index}.{EXTENSIONS[content_type]}",
                    owner_key_id=prediction.owner_key_id,
                    size=(result.width, result.height),
                )
                output_ids.append(record.id)
        except Exception:
            for file_id in output_ids:  # a failed prediction keeps no half of its outputs
                await asyncio.to_thread(self.files.delete, file_id)
            raise
        completed = utcnow()
        predict_time = (completed - prediction.started_at).total_seconds()
        self.metrics.predict_time.observe(predict_time)
        timings = {f"{k}_time": round(v, 4) for k, v in result.timings.items()}
        self._transition(
            prediction_id,
            SUCCESS,
            output=output_ids,
            seed=str(result.seed),
            width=result.width,
            height=result.height,
            has_nsfw_concepts=flags,
            completed_at=completed,
            metrics_update={
                "predict_time": round(predict_time, 4),
                "transformer_passes": result.transformer_passes,
                "acceleration": result.acceleration,
                **timings,
            },
            log_line="\n".join([*logs, f"done in {predict_time:.2f} s, seed {result.seed}"]),
        )

    def _fail(self, prediction_id: str, code: str, message: str) -> None:
        self._transition(
            prediction_id, ERROR, error_code=code, error_message=message, completed_at=utcnow(), log_line=message
        )

    # ---- the one place a status changes --------------------------------------------------

    def _transition(
        self, prediction_id: str, status: str, *, log_line: str | None = None, metrics_update=None, **fields
    ) -> None:
        with self.sessions.begin() as session:
            prediction = session.get(Prediction, prediction_id)
            if prediction is None or prediction.status in TERMINAL:
                return  # an end is final: a late worker message cannot change it
            previous_status = prediction.status
            prediction.status = status
            for name, value in fields.items():
                setattr(prediction, name, value)
            if metrics_update:
                prediction.metrics = {**prediction.metrics, **metrics_update}
            if log_line:
                stamp = datetime.now(UTC).strftime("%H:%M:%S")
                prediction.logs = prediction.logs + "".join(f"{stamp} {line}\n" for line in log_line.splitlines())
            if status == QUEUED:
                prediction.started_at = None
            snapshot = _detached_copy(prediction)
            if snapshot.webhook_url:  # in the same transaction: the change and its webhook commit together
                self.webhooks.changed(snapshot, previous_status, logged=bool(log_line), session=session)
        self.hub.publish(prediction_id, {"type": "status", "status": status})
        if status in TERMINAL:
            self.metrics.predictions.labels(status).inc()
            self.hub.publish(prediction_id, {"type": "done", "status": status})
            self.hub.finish(prediction_id)
        self._refresh_queue_gauge()

    # ---- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runner task failed", exc_info=task.exception())

    def _refresh_queue_gauge(self) -> None:
        with self.sessions() as session:
            waiting = session.scalar(select(func.count()).where(Prediction.status == QUEUED))
        self.metrics.queue_depth.set(waiting)

    def _update_worker_gauge(self) -> None:
        if self.pool is None:
            return
        self.metrics.count_workers(self.pool.workers())


def _detached_copy(prediction: Prediction) -> Prediction:
    copy = Prediction()
    for column in Prediction.__table__.columns:
        setattr(copy, column.key, getattr(prediction, column.key))
    return copy
