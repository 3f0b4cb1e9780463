"""What queued and running work still needs: files, LoRAs and training folders that nothing may delete.

Retention, `fluxedit gc` and the LoRA cache's eviction all ask here first, in the same database, so they
are safe while the server runs (a prediction created meanwhile that names a file deleted a moment before
fails clearly as "not a file of yours" or "deleted before it ran", never mid-run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..schema import ACTIVE_STATUSES, Status
from ..store.models import Prediction, Training

ACTIVE_PREDICTIONS = tuple(ACTIVE_STATUSES)  # queued or running
ACTIVE_TRAININGS = (Status.created, Status.processing)  # a training never passes through starting


@dataclass
class InUse:
    file_ids: set[str] = field(default_factory=set)  # inputs of queued or running predictions
    lora_digests: set[str] = field(default_factory=set)  # LoRAs they were resolved to
    training_ids: set[str] = field(default_factory=set)  # trainings that may still run


def in_use(session: Session) -> InUse:
    needed = InUse()
    rows = session.execute(
        select(Prediction.input_files, Prediction.lora_files).where(Prediction.status.in_(ACTIVE_PREDICTIONS))
    )
    for input_files, lora_files in rows:
        needed.file_ids.update(file_id for file_id in input_files or [] if file_id)
        needed.lora_digests.update(lora["digest"] for lora in lora_files or [] if lora.get("digest"))
    needed.training_ids.update(session.scalars(select(Training.id).where(Training.status.in_(ACTIVE_TRAININGS))))
    return needed
