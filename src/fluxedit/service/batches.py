"""Batches: one edit template over many images, run as ordinary predictions linked to the batch.

A batch is created in bulk: every image checked and classified, the caller's file ids looked up in one
query, the rows priced and then inserted in one transaction with the batch (Lifecycle.create_many), the
admission checks (service/admission.py, `check_batch`) inside it: the whole batch is taken or none of it.
Its predictions then take the same path as any other (queue, key turns, batching, pricing, webhooks); URLs
stay URLs until each prediction's preparation fetches it, a few at a time, so a batch never holds all of
its images in memory. Its end is service/batch_ends.py's; its views are service/batch_views.py's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select, tuple_

from ..schema import MODEL_SLUG, RUNNING_STATUSES, EditInput, FluxeditError, InputError, Status, validated_input
from ..store.models import Batch, Prediction, StoredFile, utcnow
from .admission import BatchLimits, price_ceiling
from .batch_zip import BatchImage, Skipped
from .fetch import parse_http_url
from .inputs import Reference, stored_input
from .intake import VERSION, refuse_late_keyless
from .keys import Caller
from .pricing import price_prediction

MAX_CURSOR_CHARS = 256
PREPARED_AT_ONCE = 4  # a batch's URLs fetched at a time: its images are never all in memory
PLACEHOLDER_IMAGE = "file_placeholder00"  # stands in for the image while the template alone is checked


class BatchNotFound(FluxeditError):
    def __init__(self, batch_id: str):
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id} not found")


@dataclass(frozen=True)
class BatchPage:
    batches: list[Batch]  # newest first
    next_cursor: str | None


class Batches:
    def __init__(self, runner, limits: BatchLimits, price_per_image: float):
        self.runner = runner
        self.intake = runner.intake
        self.context = runner.context
        self.files = runner.context.files
        self.limits = limits
        self.price_per_image = price_per_image

    def admit(self, caller: Caller, size: int) -> None:
        """The checks that need no inputs, before a zip is read: a rate token (one per batch request), a worker
        left, the batch's size, and the batch queues and spending limit at the least price."""
        self.intake.admission.take_rate_token(caller)
        self.intake.check_workers()
        self.check_size(size)
        with self.context.sessions() as session:
            least = round(size * self.price_per_image, 6)
            self.intake.admission.check_batch(session, caller, least, "", size, self.limits)

    def check_size(self, size: int, field: str = "images") -> None:
        if size > self.limits.max_images:
            raise InputError(
                field,
                f"has {size:,} images; a batch holds at most {self.limits.max_images:,} (FLUXEDIT_MAX_BATCH_IMAGES)",
            )

    async def create(
        self,
        caller: Caller,
        template: dict,
        images: list[BatchImage],
        *,
        base_url: str,
        own_hosts: set[str],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        prediction_webhooks: bool = False,
        skipped: list[Skipped] = (),
        admitted: bool = False,
        images_field: str = "images",
    ) -> Batch:
        """Queue a batch: one prediction per image. `admitted`: `admit` already ran (before a zip was read)."""
        if not images:
            raise InputError(images_field, "holds no image: give at least one (JPEG, PNG or WebP)")
        if not admitted:
            self.admit(caller, len(images))
        self.check_size(len(images), images_field)
        settings = self.check_template(template, caller, webhook_url)
        shared = [self.intake.resolver.classify(r, f"input.image_urls.{i}", own_hosts)
                  for i, r in enumerate(settings.image_urls)]  # fmt: skip
        shared_files = [await self.intake.resolver.store_now(r, f"input.image_urls.{i}", caller)
                        for i, r in enumerate(shared)]  # fmt: skip
        mains = [self.intake.resolver.classify(image.image, f"images.{i}", own_hosts) for i, image in enumerate(images)]
        main_files = await self._store_mains(mains, caller)
        batch = Batch(
            id="batch_" + secrets.token_hex(12), owner_key_id=caller.key_id, status=Status.processing,
            total=len(images), input=_shown_template(settings, template), skipped=[s.__dict__ for s in skipped],
            base_url=base_url.rstrip("/"), webhook_url=webhook_url, webhook_secret=webhook_secret,
            prediction_webhooks=prediction_webhooks,
        )  # fmt: skip
        rows = []
        for index, (image, main, record) in enumerate(zip(images, mains, main_files, strict=True)):
            edit_input = _item_input(settings, image, index, "prompt" in template)
            ready = record is not None and all(shared_files) and not settings.loras
            row = Prediction(
                id=secrets.token_hex(12), owner_key_id=caller.key_id, model=MODEL_SLUG, version=VERSION,
                status=Status.created, input=stored_input(edit_input, [main, *shared], [record, *shared_files]),
                input_files=[record.id if record else None, *(f.id if f else None for f in shared_files)],
                inputs_ready=ready, logs="", metrics={}, base_url=batch.base_url,
                webhook_url=webhook_url if prediction_webhooks else None,
                webhook_secret=webhook_secret if prediction_webhooks else None,
                batch_id=batch.id, batch_index=index, batch_name=_item_name(image, main, record, index),
            )  # fmt: skip
            if record is not None and all(shared_files):
                price_prediction(row, record.width, record.height, edit_input, self.price_per_image)
            else:
                row.cost = price_ceiling(edit_input, self.price_per_image)  # reserved; preparation settles it
            rows.append(row)
        total_cost = round(sum(row.cost for row in rows), 6)

        def admitted_whole(session) -> None:  # in the inserts' transaction: the whole batch or none of it
            self.intake.check_workers()
            self.intake.admission.check_batch(session, caller, total_cost, batch.id, len(rows), self.limits)
            refuse_late_keyless(caller, session)

        self.context.lifecycle.create_many(rows, admitted_whole, companions=[batch])
        self.context.wake.set()
        waiting = [row.id for row in rows if not row.inputs_ready]
        if waiting:
            self.context.spawn(self._prepare_in_turn(waiting))
        return batch

    def check_template(self, template: dict, caller: Caller, webhook_url: str | None) -> EditInput:
        """The template checked as a prediction's input would be (errors name input.<field>), LoRAs and webhook."""
        if "image_url" in template:
            raise InputError("input.image_url", "is given per image in a batch: list the images in `images`")
        if template.get("mask_url") is not None:  # a mask is the size of one image: a batch's images differ
            raise InputError("input.mask_url", "is not taken by a batch: a mask fits one image; send a prediction")
        settings = validated_input({"prompt": "-", **template, "image_url": PLACEHOLDER_IMAGE}, prefix="input.")
        lora_resolver = self.intake.lora_resolver
        if settings.loras and lora_resolver is None:
            raise InputError("input.loras", "LoRA adapters are not enabled on this server")
        for index, lora in enumerate(settings.loras):
            lora_resolver.kind(lora.path, f"input.loras.{index}.path", caller)  # unknown names: 422 now
        if webhook_url is not None:
            parse_http_url(webhook_url, "webhook_url")
        return settings

    async def _store_mains(self, refs: list[Reference], caller: Caller) -> list[StoredFile | None]:
        """Each image's stored file (None for a URL, fetched later). The caller's file ids in one query."""
        own = self.files.present(ref.value for ref in refs if ref.kind == "file")
        stored = []
        for index, ref in enumerate(refs):
            if ref.kind == "file":
                record = own.get(ref.value)
                if record is None or record.owner_key_id != caller.key_id:
                    raise InputError(
                        f"images.{index}", f"{ref.value} not found: it is not a file of yours on this server"
                    )
                stored.append(record)
            else:
                stored.append(await self.intake.resolver.store_now(ref, f"images.{index}", caller))
        return stored

    def recover(self) -> None:
        """After a restart: the batches' predictions still waiting for their URLs are fetched in turn again,
        a few at a time per batch, as when the batch was made (never all of a 1,000-URL batch at once)."""
        waiting = (Prediction.status == Status.created) & ~Prediction.inputs_ready & Prediction.batch_id.is_not(None)
        with self.context.sessions() as session:
            rows = session.execute(
                select(Prediction.batch_id, Prediction.id).where(waiting).order_by(Prediction.batch_index)
            ).all()
        by_batch: dict[str, list[str]] = {}
        for batch_id, prediction_id in rows:
            by_batch.setdefault(batch_id, []).append(prediction_id)
        for prediction_ids in by_batch.values():
            self.context.spawn(self._prepare_in_turn(prediction_ids))

    async def _prepare_in_turn(self, prediction_ids: list[str]) -> None:
        """Fetch the batch's URLs a few at a time, in order; a cancelled prediction's is never fetched."""
        pending = iter(prediction_ids)

        async def one_at_a_time() -> None:
            for prediction_id in pending:  # shared by the few: each id is taken once
                row = self.context.get(prediction_id)
                if row is not None and row.status == Status.created and not row.inputs_ready:
                    await self.runner.preparation.prepare(prediction_id)

        await asyncio.gather(*(one_at_a_time() for _ in range(PREPARED_AT_ONCE)))

    # ---- reading and cancelling ---------------------------------------------------------------

    def get(self, caller: Caller, batch_id: str) -> Batch:
        with self.context.sessions() as session:
            batch = session.get(Batch, batch_id)
        if batch is None or batch.owner_key_id != caller.key_id:
            raise BatchNotFound(batch_id)
        return batch

    def page(self, caller: Caller, limit: int, cursor: str | None) -> BatchPage:
        query = select(Batch).where(Batch.owner_key_id == caller.key_id)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query = query.where(tuple_(Batch.created_at, Batch.id) < tuple_(created, last_id))
        query = query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
        with self.context.sessions() as session:
            rows = list(session.scalars(query))
        page, more = rows[:limit], len(rows) > limit
        return BatchPage(page, _encode_cursor(page[-1]) if more else None)

    async def cancel(self, caller: Caller, batch_id: str) -> Batch:
        """Cancel what has not ended: the waiting predictions at once, in one transaction; the running ones at
        their next step. The batch is `cancelled` from now; it ends (and calls its webhook) with its last one."""
        self.get(caller, batch_id)
        with self.context.sessions.begin() as session:
            batch = session.get(Batch, batch_id, with_for_update=True)
            if batch.completed_at is None:
                batch.status = Status.cancelled
            rows = session.execute(
                select(Prediction.id, Prediction.status).where(
                    Prediction.batch_id == batch_id, Prediction.status.in_((Status.created, *RUNNING_STATUSES))
                )
            ).all()
        waiting = [row_id for row_id, status in rows if status == Status.created]
        self.context.lifecycle.change_many(
            waiting, Status.cancelled, only_from=Status.created, log_line="cancelled with its batch before it ran",
            completed_at=utcnow(),
        )  # fmt: skip
        for row_id, status in rows:
            if status in RUNNING_STATUSES:
                await self.runner.cancel(row_id)
        return self.get(caller, batch_id)


def _item_input(settings: EditInput, image: BatchImage, index: int, template_prompt: bool) -> EditInput:
    """The template with this image (and its own prompt, checked as any prompt is)."""
    if image.prompt is None and not template_prompt:
        raise InputError(f"images.{index}.prompt", "is required: set input.prompt, or a prompt for each image")
    if image.prompt is None:
        return settings.model_copy(update={"image_url": image.image})
    try:
        return validated_input({**settings.model_dump(exclude_unset=True), "image_url": image.image,
                                "prompt": image.prompt})  # fmt: skip
    except InputError as error:
        raise InputError(f"images.{index}.{error.field}", error.problem) from None


def _shown_template(settings: EditInput, template: dict) -> dict:
    """The template as the batch shows it: the validated fields the caller set, without the placeholder image."""
    shown = settings.model_dump(mode="json", exclude_unset=True)
    shown.pop("image_url", None)
    if "prompt" not in template:
        shown.pop("prompt", None)
    return shown


def _item_name(image: BatchImage, ref: Reference, record: StoredFile | None, index: int) -> str:
    """What results.zip and the items call the image: its given name, its URL's file name, its file's name."""
    if image.name:
        return image.name[:255]
    if ref.kind == "url":
        tail = urlsplit(ref.value).path.rsplit("/", 1)[-1]
        if tail:
            return tail[:255]
    if record is not None and record.filename and record.filename not in ("upload", "data-uri"):
        return record.filename[:255]
    return f"image-{index}"


def _encode_cursor(batch: Batch) -> str:
    raw = json.dumps([batch.created_at.isoformat(), batch.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    problem = InputError("cursor", "is not a cursor this server gave out")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise problem
    try:
        created, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError, RecursionError):
        raise problem from None
