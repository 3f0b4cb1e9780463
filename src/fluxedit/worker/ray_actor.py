"""One GPU worker as a Ray actor: the worker child's own code, with a queue where the child has its pipe.

worker/child.py's `Worker` reads control messages from a connection and sends its events back through
it. Here that connection is `QueueConnection`: the pool's `send` calls fill its inbox and the pool's
`next_events` long-polls drain its outbox, so a job runs, reports progress and obeys a cancel (within
one step) exactly as it does in a local child. The actor is threaded: `send`, `next_events` and `stats`
each have their own thread (one each: control messages arrive in the order the pool sent them), while
the engine runs in the serving thread. Each method names its concurrency group where it is defined
(`ray.method`), not in the pool's calls: Ray Client (`ray://`) refuses a per-call `concurrency_group` option,
and the class it ships to the cluster is this module's, so only what is written here reaches the actor.

Ray places the actor on a node with a free GPU (`num_gpus=1`) and sets CUDA_VISIBLE_DEVICES for it,
so the engine sees exactly its own GPU.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter

import ray

from ..config import EngineConfig
from .child import Worker, _describe
from .messages import FromWorker, LoadFailed, Ready, ToWorker, WorkerInfo

CONCURRENCY_GROUPS = {"control": 1, "events": 1, "stats": 1}  # a thread each; where() is in the default group


class QueueConnection:
    """The two ends child.Worker talks to: recv() takes what the pool sent, send() queues an event for it."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[ToWorker] = queue.Queue()
        self.outbox: queue.Queue[FromWorker] = queue.Queue()

    def recv(self) -> ToWorker:
        return self.inbox.get()

    def send(self, message: FromWorker) -> None:
        self.outbox.put(message)


class EngineActor:
    def __init__(self, config: EngineConfig, reader) -> None:
        self.conn = QueueConnection()
        self.lora_loads: Counter[str] = Counter()  # adapter name -> times it was loaded onto the model
        self.runs = 0  # edits run, for the tests' and operators' counts
        self._between_jobs = threading.Lock()  # held while a job runs, so stats() sees whole jobs
        threading.Thread(target=self._serve, args=(config, reader), name="engine", daemon=True).start()

    # ---- called by the pool ---------------------------------------------------------------------

    def where(self) -> dict:
        """Where Ray placed this actor; the pool's first call, answered once the actor is placed."""
        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": context.get_node_id(), "gpus": context.get_accelerator_ids()}

    @ray.method(concurrency_group="control")
    def send(self, message: ToWorker) -> None:
        self.conn.inbox.put(message)

    @ray.method(concurrency_group="events")
    def next_events(self, wait_s: float) -> list[FromWorker]:
        """The events sent since the last call, in order; waits up to `wait_s` for the first one."""
        try:
            events = [self.conn.outbox.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self.conn.outbox.get_nowait())
            except queue.Empty:
                return events

    @ray.method(concurrency_group="stats")
    def stats(self) -> dict:
        """Edits run and adapter loads so far (by adapter name: `lora_` + the digest's first 16 digits), counted
        after each job: while one runs, this waits for its end (in a thread of its own, so events still flow)."""
        with self._between_jobs:
            return {"pid": os.getpid(), "runs": self.runs, "lora_loads": dict(self.lora_loads)}

    # ---- the serving thread ---------------------------------------------------------------------

    def _serve(self, config: EngineConfig, reader) -> None:
        engine = self._load(config)
        if engine is None:
            return
        worker = Worker(self.conn, engine, reader)
        threading.Thread(target=worker._read_control, name="control", daemon=True).start()
        while (work := worker.jobs.get()) is not None:  # as Worker.serve, counting runs and adapter loads
            with self._between_jobs:
                before = set(engine.loras.loaded)
                if isinstance(work, list):
                    worker._run(work)
                    self.runs += len(work)
                else:
                    worker._train(work)
                self.lora_loads.update(set(engine.loras.loaded) - before)

    def _load(self, config: EngineConfig):
        """The engine, loaded and warmed up, with Ready sent; or LoadFailed sent and None."""
        try:
            from ..engine import Engine

            engine = Engine.from_config(config)
        except Exception as error:  # any load failure is reported; the actor then takes no work
            self.conn.send(LoadFailed(_describe(error)))
            return None
        placement = engine.model.placement
        try:
            notes = engine.warm_up()
        except Exception as error:  # a failed warm-up only costs the first `high` request its compile time
            notes = [f"warm-up failed: {type(error).__name__}: {error}"]
        info = WorkerInfo(str(placement.device), placement.memory_mode, engine.attention, tuple(notes or ()))
        self.conn.send(Ready(info))
        return engine
