"""GPU workers as Ray actors across the nodes of a Ray cluster (`--workers ray` or `ray://HEAD:10001`).

It implements the WorkerPool protocol as the local pool does, and ClusterPool on top (pool_protocol.py):
- one actor per GPU (`num_gpus=1`, worker/ray_actor.py), each owning an engine and reading its inputs
  through the store reader it was given, never a path of this machine beyond what the reader names;
- one task per actor long-polls its events (`next_events`) and hands them to the subscriber on the
  event loop, in the order the actor sent them; a failed poll means the actor or its node is gone:
  its jobs come back as Died(requeue=True), and a new actor takes its place;
- between --min-workers and --max-workers actors, growing with the queue (want_workers) and shrinking
  after --worker-idle-seconds without work. An actor Ray cannot place yet stays pending (`starting`):
  that demand is what makes Ray's autoscaler, or KubeRay's, add a GPU node. Nothing here starts machines;
- LoRA affinity: the pool remembers which adapters it sent to each actor (the engine keeps the
  --max-loras most recently used, and so does this record), and free_worker_for prefers a holder.
The actors are owned by this process: when the server ends, Ray ends them too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import ray

from ..config import EngineConfig
from .messages import (
    JOB_ENDS,
    Cancel,
    Died,
    EditJob,
    Failed,
    FromWorker,
    LoadFailed,
    LoraFile,
    Ready,
    RunBatch,
    RunJob,
    ToWorker,
    TrainingJob,
    TrainSlice,
    WorkerInfo,
    WorkerState,
)
from .pool import RESTART_DELAYS
from .pool_protocol import EventHandler, WorkerView
from .ray_actor import CONCURRENCY_GROUPS, EngineActor

log = logging.getLogger(__name__)
POLL_S = 2.0  # one event long-poll waits this long at most; a dead actor fails it at once
SIZING_TICK_S = 1.0  # how often idle actors are looked at
PENDING = "waiting for Ray to place it on a node with a free GPU"
NAMESPACE = "fluxedit"
CLIENT_TRIES = 3  # Ray Client connections tried at start (ray://)


async def _answer(ref):
    """An ObjectRef's value, awaited on the loop: through its future, which plain Ray and Ray Client (ray://) both
    give. A cancelled wait leaves Ray's future alone: Ray Client completes every pending future when its connection
    closes and stops at the first that refuses (asyncio.wrap_future would have cancelled it), leaving the rest
    unanswered."""
    loop = asyncio.get_running_loop()
    answer = loop.create_future()

    def relay(done: concurrent.futures.Future) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, answer, done)

    ref.future().add_done_callback(relay)
    return await answer


def _settle(answer: asyncio.Future, done: concurrent.futures.Future) -> None:
    if answer.done():
        return  # the wait was cancelled
    if done.cancelled():
        answer.cancel()
    elif (error := done.exception()) is not None:
        answer.set_exception(error)
    else:
        answer.set_result(done.result())


@contextlib.contextmanager
def _signal_handlers_kept():
    """ray.init replaces the SIGTERM handler with a plain exit: the server's own (uvicorn's graceful stop, which
    drains running work) is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            if handler is not None:
                signal.signal(number, handler)


@dataclass
class ActorHandle:
    name: str
    state: WorkerState = WorkerState.starting
    reason: str | None = PENDING
    job_ids: list[str] = field(default_factory=list)
    info: WorkerInfo | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    actor: object | None = None  # the current Ray actor; None between a death and its replacement
    pid: int | None = None  # its process, once placed
    node_id: str | None = None
    loras: OrderedDict[str, None] = field(default_factory=OrderedDict)  # digests it holds, least recent first
    free_since: float = field(default_factory=time.monotonic)
    watcher: asyncio.Task | None = None

    def view(self) -> WorkerView:
        return WorkerView(self.name, self.state, self.reason, self.info, tuple(self.job_ids), self.restarts, self.pid)

    @property
    def placed(self) -> bool:
        return self.pid is not None


class RayWorkerPool:
    def __init__(
        self,
        config: EngineConfig,
        reader,
        *,
        address: str,
        min_workers: int = 1,
        max_workers: int = 0,
        idle_seconds: float = 300.0,
    ):
        self.config = config
        self.reader = reader  # pickled into every actor: how it reads the inputs and LoRAs its jobs name
        self.address = address  # a GCS address (host:port), "auto", or ray://host:port (Ray Client)
        self.min_workers = min_workers
        self.max_workers = max_workers  # 0: the GPUs the cluster has when the pool starts
        self.idle_seconds = idle_seconds
        self.on_event: EventHandler = lambda worker, event: None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.wanted = min_workers  # workers the queue asked for last (want_workers)
        self.prefix = f"fluxedit-{uuid.uuid4().hex[:8]}"  # the actors' names: one server's set on a shared cluster
        self._workers: list[ActorHandle] = []
        self._count = 0
        self._connected_here = False
        self._remote = None
        self._sizing: asyncio.Task | None = None

    def subscribe(self, handler: EventHandler) -> None:
        self.on_event = handler

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if not ray.is_initialized():
            with _signal_handlers_kept():
                self._connect()
            self._connected_here = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.max_workers = max(self.max_workers or gpus, self.min_workers, 1)
        self._remote = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(EngineActor)
        log.info("Ray cluster at %s: %d GPUs now; %d to %d workers", self.address, gpus, self.min_workers,
                 self.max_workers)  # fmt: skip
        for _ in range(self.min_workers):
            self._add()
        self._sizing = asyncio.create_task(self._size_forever())

    def _connect(self) -> None:
        """ray.init; through Ray Client, tried CLIENT_TRIES times: the head starts a server process for each client
        connection, and one that dies as it starts fails the connection (ConnectionAbortedError) though the next
        may well work."""
        tries = CLIENT_TRIES if self.address.startswith("ray://") else 1
        for attempt in range(1, tries + 1):
            try:
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=True)
                return
            except ConnectionError as error:
                if attempt == tries:
                    raise
                reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                log.warning("Ray Client connection to %s failed (%s); trying again (%d of %d)", self.address, reason,
                            attempt + 1, tries)  # fmt: skip

    # ---- actors: start, watch, replace, retire ----------------------------------------------------

    def _add(self) -> None:
        handle = ActorHandle(name=f"worker-{self._count}")
        self._count += 1
        self._workers.append(handle)
        self._launch(handle)

    def _launch(self, handle: ActorHandle) -> None:
        try:
            actor = self._remote.options(
                name=f"{self.prefix}-{handle.name}-{handle.restarts}", num_gpus=1, num_cpus=1, max_restarts=0
            ).remote(self.config, self.reader)
        except Exception as error:  # Ray itself is out of reach (a Ray Client connection lost for good): no actor
            self._unreachable(handle, error)
            return
        handle.actor, handle.state, handle.reason = actor, WorkerState.starting, PENDING
        handle.job_ids, handle.info, handle.pid, handle.node_id = [], None, None, None
        handle.loras.clear()
        handle.free_since = time.monotonic()
        handle.watcher = self.loop.create_task(self._watch(handle, actor))

    async def _watch(self, handle: ActorHandle, actor) -> None:
        """Hand the actor's events to the subscriber, in order, until it stops; then report its death."""
        try:
            placed = await _answer(actor.where.remote())  # once Ray has placed the actor (pending until then)
            if handle.actor is not actor:
                return
            handle.pid, handle.node_id, handle.reason = placed["pid"], placed["node_id"], None
            while True:
                events = await _answer(actor.next_events.remote(POLL_S))
                for event in events:
                    if handle.actor is not actor:
                        return
                    self._handle(handle, event)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # RayActorError and kin: the actor, or the node it ran on, is gone
            self._on_death(handle, actor, error)

    def _handle(self, handle: ActorHandle, message: FromWorker) -> None:
        match message:
            case Ready(info):
                handle.state, handle.info, handle.crashes_in_a_row = WorkerState.ready, info, 0
                handle.free_since = time.monotonic()
            case LoadFailed(reason):
                handle.state, handle.reason = WorkerState.failed, reason
                log.error("%s could not load the model: %s", handle.name, reason)
                self._end(handle)  # its GPU is of no use to it: give it back to the cluster
            case _ if isinstance(message, JOB_ENDS) and message.job_id in handle.job_ids:
                handle.job_ids.remove(message.job_id)
                if isinstance(message, Failed) and message.code == "OUT_OF_MEMORY":
                    handle.state = WorkerState.stopping  # the actor exits to free the GPU; it is replaced
                elif not handle.job_ids and handle.state == WorkerState.busy:
                    handle.state, handle.free_since = WorkerState.ready, time.monotonic()
        self.on_event(handle.view(), message)

    def _on_death(self, handle: ActorHandle, actor, error: Exception) -> None:
        if handle.actor is not actor:
            return  # retired, or already replaced
        handle.actor = None
        if self.stopping:
            handle.state = WorkerState.stopped
            return
        job_ids = tuple(handle.job_ids)
        handle.crashes_in_a_row += 1
        handle.restarts += 1
        log.warning("%s (Ray actor) was lost while %s: %s; replacing it", handle.name, handle.state,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)  # fmt: skip
        handle.state, handle.job_ids, handle.info, handle.pid = WorkerState.starting, [], None, None
        handle.reason = PENDING
        self.on_event(handle.view(), Died(None, job_ids, requeue=True))
        delay = RESTART_DELAYS[min(handle.crashes_in_a_row - 1, len(RESTART_DELAYS) - 1)]
        self.loop.call_later(delay, self._relaunch, handle)

    def _unreachable(self, handle: ActorHandle, error: Exception) -> None:
        """The worker is `failed`, saying why, and is tried again with the crash back-off: it may come back."""
        handle.actor, handle.state, handle.job_ids, handle.info, handle.pid = None, WorkerState.failed, [], None, None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        handle.reason = f"Ray cannot be reached at {self.address} ({reason}); trying again"
        log.error("%s: %s (a Ray Client connection lost for good comes back only when the server restarts)",
                  handle.name, handle.reason)  # fmt: skip
        handle.crashes_in_a_row += 1
        delay = RESTART_DELAYS[min(handle.crashes_in_a_row - 1, len(RESTART_DELAYS) - 1)]
        self.loop.call_later(delay, self._relaunch, handle)

    def _relaunch(self, handle: ActorHandle) -> None:
        if not self.stopping and handle in self._workers and handle.actor is None:
            self._launch(handle)

    def _end(self, handle: ActorHandle) -> None:
        """Stop watching the actor and end it (its death is then no event)."""
        actor, handle.actor = handle.actor, None
        if handle.watcher is not None and handle.watcher is not asyncio.current_task():
            handle.watcher.cancel()
        if actor is not None:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor, no_restart=True)

    def _retire(self, handle: ActorHandle) -> None:
        log.info("%s: no work for %g s, stopping it", handle.name, self.idle_seconds)
        self._workers.remove(handle)
        self._end(handle)
        handle.state = WorkerState.stopped

    # ---- sizing (ClusterPool) -------------------------------------------------------------------

    def want_workers(self, queued: int) -> None:
        if self.loop is None or self.stopping:
            return
        busy = sum(1 for handle in self._workers if handle.job_ids)
        self.wanted = min(self.max_workers, max(self.min_workers, busy + queued))
        for _ in range(self.wanted - len(self._workers)):
            self._add()  # pending until Ray places it: what an autoscaler sees as demand

    async def _size_forever(self) -> None:
        while True:
            await asyncio.sleep(SIZING_TICK_S)
            self._shrink()

    def _shrink(self) -> None:
        """Retire workers without work for idle_seconds, down to what the queue wants (never below the minimum):
        first those Ray never placed, then the longest idle."""
        excess = len(self._workers) - max(self.min_workers, self.wanted)
        if excess <= 0:
            return
        now = time.monotonic()
        idle = [
            handle
            for handle in self._workers
            if not handle.job_ids
            and (handle.state == WorkerState.ready or (handle.state == WorkerState.starting and not handle.placed))
            and now - handle.free_since >= self.idle_seconds
        ]
        idle.sort(key=lambda handle: (handle.placed, handle.free_since))
        for handle in idle[:excess]:
            self._retire(handle)

    # ---- the WorkerPool protocol ----------------------------------------------------------------

    def workers(self) -> tuple[WorkerView, ...]:
        return tuple(handle.view() for handle in self._workers)

    def free_worker(self) -> WorkerView | None:
        return next((h.view() for h in self._workers if h.state == WorkerState.ready), None)

    def free_worker_for(self, lora_digests: Sequence[str]) -> WorkerView | None:
        ready = [handle for handle in self._workers if handle.state == WorkerState.ready]
        if not ready:
            return None
        if not lora_digests:
            return ready[0].view()
        holding = [handle for handle in ready if all(digest in handle.loras for digest in lora_digests)]
        return (holding[0] if holding else min(ready, key=lambda handle: len(handle.loras))).view()

    def _ready(self, name: str) -> ActorHandle:
        handle = next(h for h in self._workers if h.name == name)
        if handle.state != WorkerState.ready:
            raise RuntimeError(f"{name} is {handle.state}, not ready: it cannot take a job")
        return handle

    def _send(self, handle: ActorHandle, message: ToWorker) -> None:
        if handle.actor is None:
            return
        try:  # a dead actor's calls fail quietly: its watcher reports the death
            handle.actor.send.remote(message)
        except Exception as error:  # a lost Ray Client connection refuses at once; the watcher's poll fails too
            log.warning("%s: could not send %s: %s", handle.name, type(message).__name__, error)

    def submit(self, worker: str, jobs: Sequence[EditJob]) -> None:
        handle = self._ready(worker)
        handle.state, handle.job_ids = WorkerState.busy, [job.id for job in jobs]
        self._hold(handle, jobs[0].loras)  # a batch shares its LoRAs (they are part of its batch key)
        self._send(handle, RunJob(jobs[0]) if len(jobs) == 1 else RunBatch(tuple(jobs)))

    def _hold(self, handle: ActorHandle, loras: Sequence[LoraFile]) -> None:
        """Record the adapters the actor's engine will hold after this job, as its LoraManager keeps them."""
        for lora in loras:
            handle.loras[lora.digest] = None
            handle.loras.move_to_end(lora.digest)
        while len(handle.loras) > self.config.max_loras:
            handle.loras.popitem(last=False)

    def submit_training(self, worker: str, job: TrainingJob) -> None:
        handle = self._ready(worker)
        handle.state, handle.job_ids = WorkerState.busy, [job.id]
        self._send(handle, TrainSlice(job))

    def cancel(self, job_id: str) -> None:
        for handle in self._workers:
            if job_id in handle.job_ids:
                self._send(handle, Cancel(job_id))

    def kill(self, job_id: str) -> None:
        for handle in self._workers:
            if job_id in handle.job_ids and handle.actor is not None:
                ray.kill(handle.actor, no_restart=True)  # its watcher then reports the death (Died)

    def batch_of(self, job_id: str) -> list[str]:
        return next((list(h.job_ids) for h in self._workers if job_id in h.job_ids), [])

    def busy_job_ids(self) -> list[str]:
        return [job_id for h in self._workers if h.state == WorkerState.busy for job_id in h.job_ids]

    async def close(self) -> None:
        self.stopping = True
        if self._sizing is not None:
            self._sizing.cancel()
        for handle in self._workers:  # the runner has drained them: nothing runs that a stop would let finish
            self._end(handle)
            handle.state = WorkerState.stopped
        if self._connected_here:
            await asyncio.to_thread(ray.shutdown)
