"""Storing a finished prediction's outputs and marking it `success` (or `error`, with the reason).

Every output image is stored, or none is: a quota that the images do not fit, or a failed write, ends
the prediction with an error and deletes what was already written.
"""

from __future__ import annotations

import asyncio
import logging

from ..schema import RUNNING_STATUSES, Status
from ..store.files import CONTENT_TYPES, EXTENSIONS
from ..store.models import utcnow
from ..worker.messages import JobResult
from .pricing import settled_cost
from .quota import QuotaExceeded
from .run_context import RunContext

log = logging.getLogger(__name__)


class Results:
    def __init__(self, context: RunContext):
        self.context = context

    async def finish(self, prediction_id: str, result: JobResult) -> None:
        fail = self.context.lifecycle.fail
        try:
            await self._store(prediction_id, result)
        except QuotaExceeded as error:  # the key's or the server's storage quota: say which, and the limit
            fail(prediction_id, error.error_code, f"the output could not be stored: {error}")
        except Exception as error:  # e.g. a full disk: the prediction still ends, with the reason
            log.exception("storing the result of %s failed", prediction_id)
            fail(prediction_id, "EXECUTION_ERROR", f"storing the result failed: {type(error).__name__}: {error}")

    async def _store(self, prediction_id: str, result: JobResult) -> None:
        prediction = self.context.get(prediction_id)
        if prediction is None or prediction.status not in RUNNING_STATUSES or prediction.started_at is None:
            log.info("the result of %s came after it ended or was re-queued; it is dropped", prediction_id)
            return  # e.g. its execution timeout, or a cancel, won the race with the worker's last step
        flags = result.has_nsfw_concepts
        if flags and all(flags):
            self.context.lifecycle.fail(
                prediction_id, "PROVIDER_REJECTED", "the safety checker flagged every output image"
            )
            return
        output_ids = await self._store_images(prediction_id, prediction.owner_key_id, result)
        completed = utcnow()
        predict_time = (completed - prediction.started_at).total_seconds()
        self.context.metrics.predict_time.observe(predict_time)
        timings = {f"{k}_time": round(v, 4) for k, v in result.timings.items()}
        generated = (result.generated_width, result.generated_height)  # 0: as priced (the result's own size)
        changed = self.context.lifecycle.change(
            prediction_id,
            Status.success,
            only_from=RUNNING_STATUSES,  # not re-queued meanwhile (a new leader's recovery) ...
            expect={"attempts": prediction.attempts},  # ... nor started again: this result is of that attempt
            output=output_ids,
            seed=str(result.seed),
            width=result.width,
            height=result.height,
            cost=settled_cost(prediction.cost, (prediction.width, prediction.height), generated),
            has_nsfw_concepts=flags,
            completed_at=completed,
            metrics_update={
                "predict_time": round(predict_time, 4),
                "transformer_passes": result.transformer_passes,
                "acceleration": result.acceleration,
                **timings,
            },
            log_line="\n".join([*result.logs, f"done in {predict_time:.2f} s, seed {result.seed}"]),
        )
        if not changed:  # it ended or was re-queued while its images were stored: they belong to nothing
            for file_id in output_ids:
                await asyncio.to_thread(self.context.files.delete, file_id)

    async def _store_images(self, prediction_id: str, owner_key_id: str | None, result: JobResult) -> list[str]:
        """All the images, or none (a quota that one of them does not fit: none), in one trip off the loop."""
        content_type = CONTENT_TYPES[result.format]
        extension = EXTENSIONS[content_type]
        records = await asyncio.to_thread(
            self.context.files.put_outputs,
            result.images,
            content_type=content_type,
            filenames=[f"{prediction_id}-{index}.{extension}" for index in range(len(result.images))],
            owner_key_id=owner_key_id,
            size=(result.width, result.height),
        )
        return [record.id for record in records]
