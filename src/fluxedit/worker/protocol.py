"""Messages between the service and a worker child, as plain picklable tuples.

Parent -> child:  ("run", job) | ("run_batch", [job, ...]) | ("cancel", prediction_id) | ("stop",)
Child -> parent:  ("ready", info) | ("load_failed", reason)
                  ("started", id) | ("progress", id, step, total, preview_jpeg | None)
                  ("done", id, result) | ("failed", id, error_code, message) | ("cancelled", id)
The pool adds ("died", exit_code, [ids it was running]) when the pipe breaks.
"""

from __future__ import annotations

from typing import TypedDict


class Job(TypedDict):
    id: str
    settings: dict  # EditSettings fields
    image_paths: list[str]  # stored input files, main image first
    image_fields: list[str]  # the input name of each, for error messages
    safety_check: bool
    loras: list[dict]  # LoraSpec fields: path, digest, scale, field


class JobResult(TypedDict):
    images: list[bytes]
    format: str
    width: int
    height: int
    seed: int
    has_nsfw_concepts: list[bool] | None
    timings: dict[str, float]
    logs: list[str]
    transformer_passes: int
    acceleration: str
