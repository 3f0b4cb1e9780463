"""One Settings object for the whole program: FLUXEDIT_* environment variables, overridden by CLI flags."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, SecretStr, TypeAdapter
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"
DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration(value: object) -> float | None:
    """Seconds from 3600, "90m", "12h", "30d", "2w" or an ISO 8601 duration ("P30D"); None for off/never/0."""
    if value is None:
        return None
    if isinstance(value, bool):
        return _bad_duration(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and value.strip().lower() in ("", "off", "never", "none"):
        return None
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower() or "s"]
    elif isinstance(value, str) and value.strip().upper().startswith("P"):
        seconds = TypeAdapter(timedelta).validate_python(value.strip()).total_seconds()
    else:
        return _bad_duration(value)
    if not math.isfinite(seconds) or seconds < 0:
        return _bad_duration(value)
    return seconds or None


def _bad_duration(value: object):
    raise ValueError(f"{value!r} is not a duration: use seconds, or a number with s, m, h, d or w (30d), or off")


Duration = Annotated[float | None, BeforeValidator(parse_duration)]
"""Seconds, given as 3600, "12h", "30d", "P30D"; None (from off, never or 0) means never."""


def _storage_address(value: str | None) -> str | None:
    """A folder path, or s3://bucket[/prefix]: an S3 address without a bucket is refused here."""
    if value and value.startswith("s3://") and not value[len("s3://") :].split("/", 1)[0]:
        raise ValueError(f"{value!r} names no bucket: use s3://bucket/prefix")
    return value or None


def _workers(value: object) -> int | str:
    """--workers: a number of local worker processes (0: one per GPU), or Ray: `ray` (the cluster at RAY_ADDRESS)
    or `ray://HEAD:PORT` (Ray Client)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if text == "ray" or (text.startswith("ray://") and len(text) > len("ray://")):
        return text
    raise ValueError(f"{value!r}: give a number of worker processes, ray (at RAY_ADDRESS) or ray://HEAD:PORT")


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how an engine is built, from one Settings: `fluxedit edit`, `train` and each
    worker of `serve` build theirs from this, so a FLUXEDIT_* engine option means the same in all three.
    Picklable: a worker process receives it whole."""

    model: str = DEFAULT_MODEL
    components: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    memory_mode: str = "auto"
    text_encoder_device: str = "auto"
    quantize: str = "auto"
    text_encoder_quantize: str = "auto"
    cache_mode: str = "schedule"
    cache_threshold: float | None = None
    attention: str = "auto"
    max_loras: int = 8
    safety_model: str | None = None
    hf_token: str | None = None
    difference_threshold: float = 0.1

    def model_arguments(self) -> dict:
        """The arguments of engine.loading.load_model: where the weights come from and where they go."""
        return {
            "model": self.model,
            "components": self.components,
            "device": self.device,
            "dtype": self.dtype,
            "memory_mode": self.memory_mode,
            "text_encoder_device": self.text_encoder_device,
            "quantize": self.quantize,
            "text_encoder_quantize": self.text_encoder_quantize,
            "token": self.hf_token,
        }

    def training_model_arguments(self) -> dict:
        """load_model's arguments for `fluxedit train`: the same model and placement, but all of it kept on the
        GPU (memory_mode gpu): an offload hook would move the weights on every forward and backward pass."""
        return {**self.model_arguments(), "memory_mode": "gpu"}


class Settings(BaseSettings):
    # allow_inf_nan=False: a NaN or infinite number would reach timers and sizes (nan breaks the event loop's timers)
    model_config = SettingsConfigDict(env_prefix="FLUXEDIT_", extra="ignore", allow_inf_nan=False)

    # The model
    model: str = DEFAULT_MODEL
    """A hub repo id, a diffusers folder, a BFL single-file .safetensors, or "tiny"."""
    components: str | None = None
    """Where the text encoders, VAE and configs come from when `model` is a single file: a diffusers folder or hub
    repo id of FLUX.1 Kontext [dev]. A single file needs it; nothing is fetched from the hub unless it names a repo."""
    device: str = "auto"
    """auto, cuda, cuda:N, mps or cpu."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), bfloat16, float16 or float32."""
    memory: str = Field("auto", pattern="^(auto|gpu|model-offload|group-offload|sequential-offload)$")
    """auto, gpu, model-offload, group-offload or sequential-offload (docs/engine.md)."""
    cache_mode: str = Field("schedule", pattern="^(schedule|adaptive)$")
    """Step caching for the regular/high levels: schedule (fixed, TaylorSeer-style) or adaptive (First-Block-Cache)."""
    cache_threshold: float | None = Field(None, ge=0)
    """0 switches step caching off (every level then computes every step); empty: each level's default."""
    attention: str = "auto"
    """Attention kernel: auto (FlashAttention 3, SageAttention or FlashAttention 2 when installed), native, ..."""
    text_encoder_device: str = Field("auto", pattern="^(auto|cpu)$")
    """cpu keeps T5-XXL in CPU memory (9.5 GB less GPU memory, slower prompt encoding); auto places it
    with the rest."""
    quantize: str = Field("auto", pattern="^(auto|none|fp8|int8|nf4)$")
    """The transformer's precision, chosen once at load (docs/engine.md): auto (what fits the GPU's free memory),
    none (the dtype), fp8, int8 or nf4."""
    text_encoder_quantize: str = Field("auto", pattern="^(auto|none|fp8|int8|nf4)$")
    """The same choice for T5-XXL."""
    safety_model: str | None = None
    """An image-classification model (hub id or folder) that flags NSFW outputs; none by default."""
    difference_threshold: float = Field(0.1, ge=0, le=1)
    """output_resolution input without a mask: a pixel belongs to the edited region when the edit changed it by more
    than this share of full scale (0-1, after a light blur); the region is then cleaned and feathered."""
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("hf_token", "HF_TOKEN"))
    """The Hugging Face token (environment variable HF_TOKEN) for gated or private repos: the model, LoRAs."""

    # LoRAs
    lora_dirs: list[Path] = []
    """Server folders whose .safetensors files requests may name by path (none by default)."""
    lora_max_bytes: int = 2 * 1024**3
    """Largest LoRA file accepted (uploads and downloads)."""
    lora_cache_bytes: int = 20 * 1024**3
    """Disk kept for downloaded LoRAs; the least recently used go first. Registered ones are kept."""
    max_loras: int = Field(8, ge=1)
    """Adapters kept loaded on each worker's model, so switching between them needs no reload."""

    training_slice_steps: int = 25
    """Trainings run between predictions in slices of this many steps: a prediction waits at most one slice."""

    # The service
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("fluxedit-data")
    database_url: str | None = None
    """SQLAlchemy URL; default: SQLite in the data folder."""
    storage: Annotated[str | None, AfterValidator(_storage_address)] = None
    """Where images, LoRAs and training LoRAs are kept: a local folder, or s3://bucket/prefix (docs/scale-out.md,
    "Files in S3"); default: the data folder."""
    s3_endpoint_url: str | None = None
    """The S3 endpoint for --storage s3://... (MinIO, Ceph, R2, ...); default: AWS_ENDPOINT_URL, else AWS's own."""
    s3_presigned_seconds: int = Field(0, ge=0, le=7 * 86400)
    """With files in S3: file and output URLs redirect (307) to presigned URLs of the bucket, valid this long;
    0 serves the bytes through the API."""
    public_url: str | None = None
    """The address clients reach this server by (for absolute output URLs); default: from each request."""
    workers: Annotated[int | str, BeforeValidator(_workers)] = 0
    """Worker processes: 0 means one per GPU (one on a machine without GPU); or GPU workers on Ray: `ray` (the
    cluster at RAY_ADDRESS) or `ray://HEAD:10001` (docs/scale-out.md, "GPU workers on Ray")."""
    min_workers: int = Field(1, ge=0)
    """With Ray workers: actors kept even when idle."""
    max_workers: int = Field(0, ge=0)
    """With Ray workers: actors at most, added while predictions wait (a pending one makes an autoscaler add a GPU
    node); 0: the GPUs the cluster has when the server starts."""
    worker_idle_seconds: float = Field(300.0, ge=0)
    """With Ray workers: seconds an actor may stay without work before it stops (down to min_workers)."""
    allow_private_urls: bool = False
    """Fetch image and webhook URLs that resolve to loopback/private addresses."""
    allowed_networks: list[str] = []
    """CIDRs fetched even though private/loopback (finer than allow_private_urls), e.g. ["10.1.2.0/24"]."""
    allow_unauthenticated: bool = False
    """Serve a non-loopback address while no API key exists."""
    price_per_image: float = 0.025
    max_queue: int = 1000
    """Predictions waiting at most; past it, creation answers 429."""
    max_queue_per_key: int = Field(200, ge=0)
    """Predictions one key (or the keyless caller) may have waiting; past it, its creates answer 429 with
    Retry-After, so one caller cannot fill the whole queue. 0: no per-key limit."""
    max_batch_images: int = Field(10_000, ge=1)
    """Images one batch (POST /v1/batches) may hold, and one key may have waiting in its batches together; a batch
    is admitted whole, past this with 422 (too big) or 429 (the key's batches are full). Not counted against
    max_queue_per_key, which limits single predictions."""
    max_batch_queue: int = Field(50_000, ge=1)
    """Images waiting in every key's batches together; past it, a new batch answers 429 with Retry-After."""
    rate_limit: int = Field(600, ge=0)
    """Predictions one key may create per minute, every create request counting; past it, 429 with Retry-After.
    0: no limit."""
    rate_limit_burst: int = Field(0, ge=0)
    """Creates one key may send at once before the rate limit spaces them out (a token bucket's size);
    0: a minute's worth (rate_limit)."""
    execution_timeout: float = Field(600.0, gt=0)
    """Seconds one prediction may run before it fails with EXECUTION_TIMEOUT."""
    batch_max: int = 0
    """Images one batch may hold (same size and settings run together); 0: 4 on a GPU, 1 (no batching) on CPU,
    where one edit already keeps every core busy (bench/speed.py)."""
    batch_wait: float = Field(0.0, ge=0)
    """Seconds to hold a batch open for similar predictions to arrive (0: batch only what is queued)."""
    drain_timeout: float = Field(60.0, ge=0)
    """On SIGTERM, seconds to let running work finish before it is re-queued."""

    # Webhooks (kept in the database until delivered: docs/operations.md, "Webhook outbox")
    webhook_retry_base: float = Field(5.0, gt=0, allow_inf_nan=False)
    """Seconds before the first retry of a failed webhook; each next wait doubles (minus up to half, at random)."""
    webhook_retry_max_delay: float = Field(300.0, gt=0, allow_inf_nan=False)
    """The longest wait between two tries of a webhook, in seconds."""
    webhook_retry_window: float = Field(3600.0, ge=0, allow_inf_nan=False)
    """Seconds after it was made that a webhook is still retried (the last try is at the end); then given up."""
    webhook_concurrency: int = Field(16, ge=1)
    """Webhook POSTs under way at once, at most; the others wait their turn in the outbox."""
    webhook_timeout: float = Field(10.0, gt=0, allow_inf_nan=False)
    """Seconds one webhook POST may take before it counts as failed."""

    cancel_grace: float = Field(30.0, gt=0, allow_inf_nan=False)
    """Seconds a worker may take to honour a cancel (it does at the next step) before it is killed; never while
    other predictions of its batch still run."""

    # Retention and storage quotas (docs/operations.md, "Retention and garbage collection", "Storage quotas")
    retain_inputs: Duration = 30 * DAY
    """How long uploaded and sent images are kept after their last use by a prediction (e.g. 30d, 12h, 3600, off)."""
    retain_outputs: Duration = 30 * DAY
    """How long output images are kept after they were made; then the prediction shows data_removed (off: always)."""
    retain_trainings: Duration = 7 * DAY
    """How long an ended training keeps its pairs, checkpoints and validation images (its LoRA stays)."""
    retention_sweep_interval: Duration = 3600.0
    """How often the server removes what expired (off: only `fluxedit gc` does)."""
    storage_quota_bytes: int = Field(0, ge=0)
    """Bytes all stored files may take together (images, LoRAs, training data); past it, storing answers 507.
    0: no limit."""
    key_storage_quota_bytes: int = Field(0, ge=0)
    """Bytes one key's files may take (its images, LoRAs, training data); past it, storing answers 413. 0: no limit."""
    training_keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints a training keeps (the newest; it resumes from the last one); older ones are deleted."""

    # Input limits (docs/operations.md, "Input limits")
    max_json_bytes: int = Field(72 * 1024**2, gt=0)
    """Largest JSON request body (room for a 50 MB image as a data URI); counted while it streams, 413 past it."""
    max_input_pixels: int = Field(120_000_000, gt=0)
    """Largest input image, in pixels (width x height), read from its header before anything is decoded: a larger
    one is refused (422). Pillow itself refuses more than 178,956,970, whatever this says."""
    decode_memory_bytes: int = Field(1024**3, gt=0)
    """Memory the images being decoded at once may take, each estimated from its header (width x height x bytes
    per pixel, with the conversions): the others wait their turn, and an image that alone needs more is refused."""
    decode_concurrency: int = Field(2, ge=1)
    """Images decoded at once, off the event loop; the others wait their turn."""

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            components=self.components,
            device=self.device,
            dtype=self.dtype,
            memory_mode=self.memory,
            text_encoder_device=self.text_encoder_device,
            quantize=self.quantize,
            text_encoder_quantize=self.text_encoder_quantize,
            cache_mode=self.cache_mode,
            cache_threshold=self.cache_threshold,
            attention=self.attention,
            max_loras=self.max_loras,
            safety_model=self.safety_model,
            hf_token=self.token,
            difference_threshold=self.difference_threshold,
        )

    @property
    def token(self) -> str | None:
        """HF_TOKEN, read here alone: the model loader and the LoRA downloader get it from this."""
        return self.hf_token.get_secret_value() if self.hf_token else None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'fluxedit.db').resolve()}"
