"""The database tables (SQLAlchemy ORM). Schema changes go through migrations/ (Alembic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..schema import Status


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A moment in UTC, read back aware of its zone on every database.

    PostgreSQL keeps the zone; SQLite keeps none and hands back naive datetimes. Every moment is written in
    UTC, so a naive one read back is UTC: it is made aware here, once, instead of in each view."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class StatusColumn(TypeDecorator):
    """A Status, stored as its name: reads back as the enum, so no code compares with a bare string."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        return None if value is None else Status(value).value  # an unknown status is refused before it is stored

    def process_result_value(self, value: str | None, dialect) -> Status | None:
        return None if value is None else Status(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict: JSON, list: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; the key itself is never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    spending_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StoredFile(Base):
    __tablename__ = "files"
    # Identical inputs are stored once: a new input is looked up by its owner and content hash first.
    __table_args__ = (Index("ix_files_owner_sha256", "owner_key_id", "sha256"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # upload, input or output
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_owner_created", "owner_key_id", "created_at"),
        Index("ix_predictions_status_created", "status", "created_at"),
        Index("ix_predictions_batch", "batch_id", "batch_index"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    status: Mapped[Status] = mapped_column(StatusColumn())
    input: Mapped[dict] = mapped_column(JSON)  # as the user sent it
    input_files: Mapped[list | None] = mapped_column(JSON, nullable=True)  # stored file ids, main image first
    lora_files: Mapped[list | None] = mapped_column(JSON, nullable=True)  # resolved LoRAs: sha256, path, scale
    inputs_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    output: Mapped[list | None] = mapped_column(JSON, nullable=True)  # output file ids
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[str | None] = mapped_column(String(24), nullable=True)  # 64-bit: kept as text
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    has_nsfw_concepts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    base_url: Mapped[str] = mapped_column(Text, default="")  # where the caller reached us: for absolute URLs
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    # None: the seed's webhook (one call when it succeeds or fails); else a dialect's, e.g. "replicate"
    webhook_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_events: Mapped[list | None] = mapped_column(JSON, nullable=True)  # the dialect's event filter
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A prediction of a batch (POST /v1/batches): which one, its place in it and the input's name there
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    batch_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    batch_name: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Batch(Base):
    """One edit over many images (POST /v1/batches): its predictions are ordinary ones, linked by batch_id.

    Its counts and progress are read from its predictions; only its end is stored here: `processing` until
    the last of them ends, then `success` (or `cancelled` at once after a cancel), completed_at set then."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_owner_created", "owner_key_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    status: Mapped[Status] = mapped_column(StatusColumn())
    total: Mapped[int] = mapped_column(Integer)
    input: Mapped[dict] = mapped_column(JSON)  # the template every prediction of it starts from
    skipped: Mapped[list] = mapped_column(JSON, default=list)  # zip members left out: name and reason
    base_url: Mapped[str] = mapped_column(Text, default="")
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # called once, when the batch ends
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    prediction_webhooks: Mapped[bool] = mapped_column(Boolean, default=False)  # each prediction's own too
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookSecret(Base):
    """The signing secret of a key's (or, without keys, the server's) Standard-Webhooks deliveries."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(40), primary_key=True)  # an API key id, or "open"
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LoraBlob(Base):
    """A LoRA file on disk, stored once per content hash. Downloads are evictable; uploads are kept."""

    __tablename__ = "lora_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    kept: Mapped[bool] = mapped_column(Boolean, default=False)  # registered by name: never evicted
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LoraName(Base):
    """A LoRA registered under a name by a key (POST /v1/loras)."""

    __tablename__ = "lora_names"
    __table_args__ = (Index("ix_lora_names_owner_name", "owner_key_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(ForeignKey("lora_blobs.sha256"))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LoraSource(Base):
    """Where a downloaded LoRA came from (a URL or hf://owner/repo/file), so it is fetched once."""

    __tablename__ = "lora_sources"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Training(Base):
    """A LoRA training job (POST /v1/trainings); its status changes only through the TrainingRunner."""

    __tablename__ = "trainings"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    status: Mapped[Status] = mapped_column(StatusColumn())
    input: Mapped[dict] = mapped_column(JSON)
    data_dir: Mapped[str] = mapped_column(Text)  # the extracted pairs
    work_dir: Mapped[str] = mapped_column(Text)  # checkpoints, validation images, outputs
    step: Mapped[int] = mapped_column(Integer, default=0)
    losses: Mapped[list] = mapped_column(JSON, default=list)
    crashes: Mapped[int] = mapped_column(Integer, default=0)  # workers lost while it trained
    lora_name: Mapped[str] = mapped_column(String(100))
    logs: Mapped[str] = mapped_column(Text, default="")
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookDelivery(Base):
    """One webhook call to make (the outbox): kept until it is delivered or given up, so a restart resumes it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also Standard Webhooks' webhook-id
    prediction_id: Mapped[str] = mapped_column(String(40), index=True)
    prediction_status: Mapped[str] = mapped_column(String(16))  # the change that made this call
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent on every try; each try is signed as it is sent
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)  # cleared once the delivery has ended
    signer: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: the seed's; else a dialect's
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    tries: Mapped[list] = mapped_column(JSON, default=list)  # each try: when, the HTTP status or the error
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # None: ended
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # a try is on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    given_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RateBucket(Base):
    """A key's token bucket of the rate limit, kept here when several replicas share the database (PostgreSQL):
    each create locks its key's row, so the replicas together allow what one would."""

    __tablename__ = "rate_buckets"

    owner: Mapped[str] = mapped_column(String(40), primary_key=True)  # an API key id, or "open"
    tokens: Mapped[float] = mapped_column(Float)
    counted_at: Mapped[float] = mapped_column(Float)  # seconds since the epoch: the replicas share the clock
