"""Taking in a new prediction: the checks it must pass, its inputs stored, its row inserted as `created`.

Inputs given as uploads or data URIs are stored now; URLs are fetched later (service/preparation.py),
with the price reserved at its ceiling until the main image's size is known. A mask is stored in its
greyscale form (masks.py); an empty one is refused at once, and once the main image's size is known a
mask of another size is refused and a full one dropped (the plain edit). The queue, rate and
spending limits (service/admission.py) are checked inside the insert's transaction.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..masks import Coverage
from ..schema import MODEL_SLUG, EditInput, FluxeditError, InputError, Status
from ..store.models import ApiKey, Prediction
from ..worker.messages import WorkerState
from .admission import Admission, price_ceiling
from .fetch import parse_http_url
from .inputs import InputResolver, StoredMask, stored_input
from .keys import Caller
from .preparation import MASK_FIELD, check_sizes, input_fields
from .pricing import price_prediction
from .run_context import RunContext

VERSION = "1.0"


class KeyRequired(FluxeditError):
    """A keyless request that reached the queue only after keys came to exist."""


class NoWorkers(FluxeditError):
    """Every worker failed to load the model: nothing could ever run a new prediction."""


class Intake:
    def __init__(
        self, context: RunContext, admission: Admission, resolver: InputResolver, lora_resolver, price_per_image: float
    ):
        self.context = context
        self.admission = admission
        self.resolver = resolver
        self.lora_resolver = lora_resolver
        self.price_per_image = price_per_image

    async def create(
        self,
        caller: Caller,
        edit_input: EditInput,
        *,
        base_url: str,
        own_hosts: set[str],
        webhook_url: str | None,
        webhook_secret: str | None,
        version: str | None,
        webhook_format: str | None,
        webhook_events: list[str] | None,
    ) -> Prediction:
        if edit_input.loras and self.lora_resolver is None:
            raise InputError("input.loras", "LoRA adapters are not enabled on this server")
        for index, lora in enumerate(edit_input.loras):
            self.lora_resolver.kind(lora.path, f"input.loras.{index}.path", caller)  # unknown names: 422 now
        if webhook_url is not None:
            parse_http_url(webhook_url, "webhook_url")  # an http(s) URL ("Invalid URL." now, not at delivery)
        references = [edit_input.image_url, *edit_input.image_urls]
        fields = input_fields(len(references))
        classified = [self.resolver.classify(r, f, own_hosts) for r, f in zip(references, fields, strict=True)]
        mask_ref = None if edit_input.mask_url is None else self.resolver.classify(edit_input.mask_url, MASK_FIELD,
                                                                                    own_hosts)  # fmt: skip
        stored = [await self.resolver.store_now(r, f, caller) for r, f in zip(classified, fields, strict=True)]
        mask = None if mask_ref is None else await self.resolver.mask_now(mask_ref, MASK_FIELD, caller)
        mask_files = _mask_files(edit_input, stored[0], mask_ref, mask)
        prediction = Prediction(
            id=secrets.token_hex(12),
            owner_key_id=caller.key_id,
            model=MODEL_SLUG,
            version=version or VERSION,
            status=Status.created,
            input=stored_input(edit_input, classified, stored, (mask_ref, mask) if mask_ref else None),
            input_files=[record.id if record else None for record in stored] + mask_files,
            inputs_ready=all(stored) and None not in mask_files and not edit_input.loras,  # LoRAs: resolved later
            logs="",
            metrics={},
            base_url=base_url.rstrip("/"),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_format=webhook_format,
            webhook_events=webhook_events,
        )
        if all(stored):
            price_prediction(prediction, stored[0].width, stored[0].height, edit_input, self.price_per_image)
        else:
            prediction.cost = price_ceiling(edit_input, self.price_per_image)  # reserved; preparation settles it

        def admitted(session: Session) -> None:  # in the insert's transaction, with no await: the checks hold
            self.check(caller, prediction.cost, session, prediction.id)
            refuse_late_keyless(caller, session)

        self.context.lifecycle.create(prediction, admitted)  # its webhook's "start" is stored with it
        return prediction

    def admit(self, caller: Caller, num_images: int = 1) -> None:
        """The checks that need no inputs: the rate limit (its token is taken) and the queue and spending limits
        at the least price. A dialect that reads uploads first calls it before, so a refused caller costs nothing."""
        self.admission.take_rate_token(caller)
        self.check(caller, self.price_per_image * num_images)

    def check(self, caller: Caller, cost: float, session: Session | None = None, new_id=None) -> None:
        """Refuse what cannot or may not run: no worker left, a full queue, a passed spending limit."""
        self.check_workers()
        if session is not None:
            self.admission.check(session, caller, cost, new_id)
            return
        with self.context.sessions() as session:
            self.admission.check(session, caller, cost)

    def check_workers(self) -> None:
        """Refuse new work when every worker failed to load the model: nothing could ever run it."""
        workers = self.context.pool.workers()
        if workers and all(w.state == WorkerState.failed for w in workers):
            raise NoWorkers(f"no worker can run predictions: {workers[0].reason}")


def _mask_files(edit_input: EditInput, main, mask_ref, mask: StoredMask | None) -> list[str | None]:
    """The mask's place in input_files: its file; None while its URL waits to be fetched; nothing when there
    is no mask, or when it covers everything (the plain edit). Sizes known now are checked now (422)."""
    if main is not None and main.width and main.height:
        check_sizes(edit_input, (main.width, main.height), mask.size if mask else None)
        if mask is not None and mask.coverage is Coverage.full:
            return []
    if mask_ref is None:
        return []
    return [mask.record.id if mask else None]


def refuse_late_keyless(caller: Caller, session: Session) -> None:
    """In a create's transaction: the first key appeared while this keyless request was on its way (after the
    first key's adoption ran): refused, rather than stored without an owner where no view shows it."""
    if caller.key_id is None and session.scalar(select(ApiKey.id).limit(1)) is not None:
        raise KeyRequired("an API key is required: keys were created on this server while this request ran")
