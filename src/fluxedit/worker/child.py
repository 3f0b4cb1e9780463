"""The worker child: loads the engine once, then runs jobs one at a time.

A reader thread takes control messages (cancel, stop) while the main thread
edits, so a cancel lands within one denoising step.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

OUT_OF_MEMORY_EXIT = 3


def child_main(
    conn: Connection, engine_options: dict, speed_options: dict, safety_model: str | None, visible_device: str | None
) -> None:
    if visible_device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_device  # before torch initialises CUDA
    try:
        from ..engine import Engine
        from ..engine.engine import EngineOptions

        engine = Engine.load(**engine_options, safety_model=safety_model, options=EngineOptions(**speed_options))
    except Exception as error:  # any load failure is reported, then the child ends
        conn.send(("load_failed", _describe(error)))
        return
    placement = engine.model.placement
    conn.send(("ready", {"device": str(placement.device), "memory_mode": placement.memory_mode}))
    Worker(conn, engine).serve()


def _describe(error: Exception) -> str:
    from ..schema import FluxeditError

    if isinstance(error, FluxeditError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Worker:
    def __init__(self, conn: Connection, engine):
        self.conn = conn
        self.engine = engine
        self.jobs: queue.Queue = queue.Queue()
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()

    def serve(self) -> None:
        threading.Thread(target=self._read_control, daemon=True).start()
        while (job := self.jobs.get()) is not None:
            self._run(job)

    def _read_control(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                if message[0] == "run":
                    self.jobs.put(message[1])
                elif message[0] == "cancel":
                    with self.lock:
                        self.cancelled.add(message[1])
                elif message[0] == "stop":
                    break
        except (EOFError, OSError):
            pass  # the parent is gone: stop after the current job
        self.jobs.put(None)

    def _run(self, job) -> None:
        from ..engine import EditRequest
        from ..imaging.decode import decode_image
        from ..schema import EditCancelled, EditSettings, FluxeditError, InputError

        job_id = job["id"]
        self.conn.send(("started", job_id))
        try:
            images = [
                decode_image(Path(path).read_bytes(), field=field)
                for path, field in zip(job["image_paths"], job["image_fields"], strict=True)
            ]
            request = EditRequest(EditSettings(**job["settings"]), images, safety_check=job["safety_check"])
            result = self.engine.edit(
                request,
                progress=lambda p: self.conn.send(("progress", job_id, p.step, p.total, _jpeg(p.preview))),
                should_stop=lambda: job_id in self.cancelled,
                previews=True,
            )
        except EditCancelled:
            self.conn.send(("cancelled", job_id))
        except InputError as error:
            self.conn.send(("failed", job_id, "INPUT_VALIDATION_ERROR", str(error)))
        except FluxeditError as error:
            self.conn.send(("failed", job_id, "EXECUTION_ERROR", str(error)))
        except Exception as error:
            if type(error).__name__ == "OutOfMemoryError":
                self.conn.send(("failed", job_id, "OUT_OF_MEMORY", "the GPU ran out of memory during this edit"))
                os._exit(OUT_OF_MEMORY_EXIT)  # a fresh process is the only sure way to get the memory back
            traceback.print_exc()
            self.conn.send(("failed", job_id, "EXECUTION_ERROR", f"{type(error).__name__}: {error}"))
        else:
            self.conn.send(("done", job_id, _result(result)))
        finally:
            with self.lock:
                self.cancelled.discard(job_id)


def _jpeg(preview) -> bytes | None:
    if preview is None:
        return None
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def _result(result) -> dict:
    return {
        "images": result.images,
        "format": result.format.value,
        "width": result.width,
        "height": result.height,
        "seed": result.seed,
        "has_nsfw_concepts": result.has_nsfw_concepts,
        "timings": result.timings,
        "logs": result.logs,
        "transformer_passes": result.transformer_passes,
        "acceleration": result.acceleration,
    }
