"""Preparing a queued prediction's inputs: fetching the images given as URLs and resolving its LoRAs.

A prediction whose inputs are not all stored yet is queued with `inputs_ready` false; this fetches and
stores them, prices it from its main image, and marks it ready for the dispatcher. Any failure ends the
prediction with the reason; nothing is left queued for ever. It also judges whether a queued row's
stored input still validates (`runnable`), for the dispatcher.

A prediction's `input_files` are its images (main first), then, when it has a mask (input.mask_url), the
mask's file: None until a mask URL is fetched. Once the main image's size is known (here, or at intake) the
mask's size is checked against it, and a full mask's place is removed: a full mask is the plain edit.
"""

from __future__ import annotations

import asyncio
import logging

from ..imaging.composite import MAX_OUTPUT_PIXELS, check_output_pixels
from ..imaging.regions import check_mask_size
from ..masks import Coverage, read_mask
from ..schema import EditInput, InputDownloadError, InputError, Status, validated_input
from ..store.models import Prediction
from .inputs import InputResolver
from .keys import Caller
from .pricing import price_prediction
from .quota import QuotaExceeded
from .run_context import RunContext

log = logging.getLogger(__name__)
MASK_FIELD = "input.mask_url"
MAX_FULL_RESOLUTION_PIXELS = MAX_OUTPUT_PIXELS  # output_resolution "input": the engine's own limit (composite.py)


def input_fields(image_count: int) -> list[str]:
    """The input name of each image of a prediction, main image first (for messages)."""
    return ["input.image_url"] + [f"input.image_urls.{i}" for i in range(image_count - 1)]


def image_count(edit_input: EditInput) -> int:
    """How many of a prediction's input_files are images; a file after them is its mask."""
    return 1 + len(edit_input.image_urls)


def check_sizes(edit_input: EditInput, image_size: tuple[int, int], mask_size: tuple[int, int] | None) -> None:
    """What is judged once the main image's (upright) size is known: the mask's size, the full-size limit."""
    if mask_size is not None:
        check_mask_size(mask_size, image_size, MASK_FIELD, "input.image_url")
    if edit_input.output_resolution == "input":
        check_output_pixels(*image_size, field="input.output_resolution")


class Preparation:
    def __init__(self, context: RunContext, resolver: InputResolver, lora_resolver, price_per_image: float):
        self.context = context
        self.resolver = resolver
        self.lora_resolver = lora_resolver
        self.price_per_image = price_per_image

    def runnable(self, prediction: Prediction) -> bool:
        """Whether a queued row's stored input still validates (a row from an older version may not): one that
        does not is failed now, with the reason, instead of stalling the queue on every dispatch."""
        try:
            validated_input(prediction.input, prefix="input.")
        except InputError as error:
            self.context.lifecycle.fail(
                prediction.id, "INPUT_VALIDATION_ERROR", f"the stored input is not valid: {error}"
            )
            return False
        return True

    async def prepare(self, prediction_id: str) -> None:
        fail = self.context.lifecycle.fail
        prediction = self.context.get(prediction_id)
        if not self.runnable(prediction):
            return
        edit_input = EditInput(**prediction.input)
        try:
            file_ids, loras = await self._resolve(prediction, edit_input)
        except InputDownloadError as error:
            fail(prediction_id, "INPUT_DOWNLOAD_ERROR", str(error))
            return
        except InputError as error:
            fail(prediction_id, "INPUT_VALIDATION_ERROR", str(error))
            return
        except QuotaExceeded as error:  # a fetched input or LoRA that does not fit
            fail(prediction_id, error.error_code, f"an input could not be stored: {error}")
            return
        except Exception as error:  # anything unexpected still ends the prediction, never strands it
            log.exception("preparing %s failed", prediction_id)
            fail(prediction_id, "EXECUTION_ERROR", f"preparing the inputs failed: {type(error).__name__}: {error}")
            return
        main = self.context.files.get(file_ids[0])
        if main is None:
            fail(prediction_id, "INPUT_VALIDATION_ERROR", "input.image_url: the file was deleted before it ran")
            return
        try:
            if main.width and main.height:  # known for every image stored since sizes were recorded
                file_ids = await self._judged_mask(edit_input, (main.width, main.height), file_ids)
        except InputError as error:
            fail(prediction_id, "INPUT_VALIDATION_ERROR", str(error))
            return
        with self.context.sessions.begin() as session:
            row = session.get(Prediction, prediction_id)
            if row.status != Status.created:
                return  # cancelled while downloading
            row.input_files = file_ids
            row.lora_files = loras
            row.inputs_ready = True
            price_prediction(row, main.width, main.height, edit_input, self.price_per_image)
        self.context.wake.set()

    async def _resolve(self, prediction: Prediction, edit_input: EditInput) -> tuple[list[str], list[dict]]:
        """Every input image stored (fetched where it was a URL) and every LoRA resolved: (file ids, LoRA jobs)."""
        caller = Caller(prediction.owner_key_id, "")
        references = [edit_input.image_url, *edit_input.image_urls]
        file_ids = list(prediction.input_files)
        for index, (ref, field) in enumerate(zip(references, input_fields(len(references)), strict=True)):
            if file_ids[index] is None:
                reference = self.resolver.classify(ref, field, set())
                file_ids[index] = (await self.resolver.fetch_and_store(reference, field, caller)).id
        if len(file_ids) > len(references) and file_ids[len(references)] is None:  # a mask URL
            reference = self.resolver.classify(edit_input.mask_url, MASK_FIELD, set())
            file_ids[len(references)] = (await self.resolver.fetch_mask(reference, MASK_FIELD, caller)).record.id
        loras = []
        for index, lora in enumerate(edit_input.loras):
            field = f"input.loras.{index}.path"
            loras.append((await self.lora_resolver.resolve(lora.path, lora.scale, field, caller)).as_job())
        return file_ids, loras

    async def _judged_mask(self, edit_input: EditInput, image_size: tuple[int, int], file_ids: list) -> list:
        """The size checks, now the main image's size is known; a full mask's place removed (the plain edit)."""
        count = image_count(edit_input)
        if len(file_ids) <= count:
            check_sizes(edit_input, image_size, None)
            return file_ids
        record = self.context.files.get(file_ids[count])
        if record is None:
            raise InputError(MASK_FIELD, "the file was deleted before it ran")
        data = await asyncio.to_thread(self.context.files.read, record.id)
        mask = await asyncio.to_thread(read_mask, data, MASK_FIELD)  # our greyscale form: judged as stored
        check_sizes(edit_input, image_size, mask.size)
        return file_ids[:count] if mask.coverage is Coverage.full else file_ids
