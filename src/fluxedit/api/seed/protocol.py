"""The seed dialect's wire format: a pydantic model for every request and response body.

Request models run the same checks, in the same order, as the hand-written parsing they replace, so every
refusal keeps its message (naming the field and the limit) and its status (a wrong model is a 404).
Response models are what /openapi.json documents and what a generated client gets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from ...schema import MODEL_SLUG, EditInput, InputError, Status, validated_input
from ...service.fetch import MAX_URL_CHARS
from ...training_options import TrainingInput
from ..bodies import optional_string, required_object, shown
from ..errors import ApiError

MAX_NAME_CHARS = 100  # model and version are stored in columns of this width
MAX_SECRET_CHARS = 1024
BINARY = WithJsonSchema({"type": "string", "format": "binary"})
EXAMPLE_INPUT = {"prompt": "make it a watercolour", "image_url": "https://example.com/photo.jpg"}


# --- requests ---------------------------------------------------------------------------------------------------


class PredictionRequest(BaseModel):
    """POST /v1/prediction and /v1/prediction/run. Unknown top-level fields are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"model": MODEL_SLUG, "input": EXAMPLE_INPUT}]},
    )

    model: str = Field(MODEL_SLUG, max_length=MAX_NAME_CHARS, description=f"Only {MODEL_SLUG} runs here.")
    version: str | None = Field(None, max_length=MAX_NAME_CHARS, description="Kept with the prediction.")
    input: EditInput = Field(description="The model's input: at least prompt and image_url (GET /v1/models/...).")
    webhook_url: str | None = Field(None, max_length=MAX_URL_CHARS, description="Called when the prediction ends.")
    webhook_secret: str | None = Field(
        None, max_length=MAX_SECRET_CHARS, description="Signs the webhook (X-Webhook-Signature)."
    )

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        model = optional_string(body, "model", max_chars=MAX_NAME_CHARS) or MODEL_SLUG
        if model != MODEL_SLUG:
            raise ApiError(404, f"model: unknown model {shown(model)}; this server runs {MODEL_SLUG}")
        version = optional_string(body, "version", max_chars=MAX_NAME_CHARS)
        raw_input = required_object(body, "input", "an object with at least prompt and image_url")
        return {
            "model": model,
            "version": version,
            "input": validated_input(raw_input, prefix="input."),
            "webhook_url": optional_string(body, "webhook_url", max_chars=MAX_URL_CHARS, what="a URL"),
            "webhook_secret": optional_string(body, "webhook_secret", max_chars=MAX_SECRET_CHARS),
        }


class FileUpload(BaseModel):
    """POST /v1/files, multipart/form-data: the image as the field `file` (or `content`)."""

    file: Annotated[bytes, BINARY] = Field(description="A JPEG, PNG or WebP image of at most 50 MB.")


class LoraUpload(BaseModel):
    """POST /v1/loras, multipart/form-data."""

    file: Annotated[bytes, BINARY] = Field(description="A .safetensors LoRA (FLUXEDIT_LORA_MAX_BYTES, 2 GB default).")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="How predictions refer to it in input.loras."
    )


class TrainingUpload(TrainingInput):
    """POST /v1/trainings, multipart/form-data: the pairs as `data` and each option as a field of its own."""

    data: Annotated[bytes, BINARY] = Field(
        description="A .zip of NAME_start / NAME_end images (and NAME.txt captions), at most 2 GB."
    )


class TrainingFromUrl(TrainingInput):
    """The input of a training whose pairs are downloaded: `data` is the URL of the zip."""

    data: str = Field(max_length=MAX_URL_CHARS, description="The http(s) URL of a .zip of the training pairs.")


class TrainingRequest(BaseModel):
    """POST /v1/trainings as JSON: {"input": {"data": "https://.../pairs.zip", ...options}}."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"input": {"data": "https://example.com/pairs.zip", "steps": 500}}]}
    )

    input: TrainingFromUrl


# --- responses --------------------------------------------------------------------------------------------------


class PredictionCreated(BaseModel):
    """The answer to POST /v1/prediction: the request was taken (the prediction's own status is in GET)."""

    status: Literal[Status.success] = Status.success
    message: str = "Prediction created successfully"
    predictionID: str


class PredictionFailure(BaseModel):
    error_code: str | None
    error_message: str | None


class PredictionMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")  # timings the worker reports besides these

    predict_time: float | None = None
    cost: float | None = None
    queue_time: float | None = None


class PredictionUrls(BaseModel):
    get: str
    cancel: str
    stream: str


class Prediction(BaseModel):
    """A prediction as GET /v1/prediction/{id} shows it."""

    id: str
    model: str
    version: str | None
    input: dict[str, Any] = Field(description="The input as stored: an inline image is shown as its file's URL.")
    status: Status
    output: list[str] | PredictionFailure | None = Field(
        description="success: the output URLs; error: the failure; otherwise null."
    )
    seed: int | None
    width: int | None
    height: int | None
    has_nsfw_concepts: list[bool] | None
    logs: str | None
    metrics: PredictionMetrics
    data_removed: bool = Field(description="Some input or output file of it was deleted.")
    urls: PredictionUrls
    created_at: str | None
    started_at: str | None
    completed_at: str | None


class PredictionList(BaseModel):
    data: list[Prediction]
    next_cursor: str | None
    next: str | None = Field(description="The URL of the next page, null on the last one.")


class WebhookDelivery(BaseModel):
    id: str
    url: str
    state: Literal["pending", "sending", "delivered", "failed"]
    prediction_status: str | None
    created_at: str | None
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    given_up_at: str | None
    last_status_code: int | None
    last_error: str | None
    tries: list[dict[str, Any]] | None


class WebhookDeliveries(BaseModel):
    prediction_id: str
    deliveries: list[WebhookDelivery]


class FileChecksums(BaseModel):
    sha256: str


class FileUrls(BaseModel):
    get: str
    content: str


class StoredFile(BaseModel):
    """An uploaded, input or output file; also Replicate's file object (its client uploads here too)."""

    id: str
    name: str | None
    content_type: str
    size: int
    etag: str
    checksums: FileChecksums
    metadata: dict[str, Any]
    width: int | None
    height: int | None
    created_at: str | None
    expires_at: str | None
    url: str
    urls: FileUrls


class LoraUse(BaseModel):
    path: str
    scale: float


class LoraUsage(BaseModel):
    loras: list[LoraUse] = Field(description="What to put in a prediction's input to use it.")


class Lora(BaseModel):
    id: str
    name: str
    size: int
    sha256: str
    created_at: str | None
    usage: LoraUsage


class LoraList(BaseModel):
    data: list[Lora]


class TrainingProgress(BaseModel):
    step: int
    total: int
    percent: float


class TrainedLora(BaseModel):
    name: str | None
    usage: LoraUsage
    urls: dict[str, str] = Field(description="The LoRA file for each format: diffusers, comfyui.")


class TrainingFailure(BaseModel):
    code: str | None
    message: str | None


class TrainingUrls(BaseModel):
    get: str
    cancel: str


class Training(BaseModel):
    id: str
    status: Status
    input: dict[str, Any]
    progress: TrainingProgress
    loss: float | None
    losses: list[float] | None
    lora: TrainedLora | None
    error: TrainingFailure | None
    logs: str | None
    urls: TrainingUrls
    created_at: str | None
    started_at: str | None
    completed_at: str | None


class TrainingList(BaseModel):
    data: list[Training]


class ModelCard(BaseModel):
    title: str
    slug: str
    version: str
    description: str
    output_type: str
    request_schema: dict[str, Any] = Field(description="The JSON Schema of a prediction's input.")
    cost: dict[str, Any] = Field(description="The price rule.")


class ModelList(BaseModel):
    data: list[ModelCard]


class UsageTotals(BaseModel):
    images: int
    predictions: int
    cost: float


class UsageDay(BaseModel):
    date: str = Field(description="YYYY-MM-DD, in UTC.")
    images: int
    predictions: int
    cost: float


class Usage(BaseModel):
    days: int
    data: list[UsageDay]
    total: UsageTotals
    spending_limit: float | None


# --- batches (POST /v1/batches: docs/api.md, "Batches") ----------------------------------------------------------

MAX_BATCH_NAME_CHARS = 255


class BatchImage(BaseModel):
    """One image of a batch with its own prompt or name."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="An http(s) URL, a file id (file_...), or a data URI.")
    prompt: str | None = Field(None, min_length=1, description="This image's prompt instead of the template's.")
    name: str | None = Field(
        None, min_length=1, max_length=MAX_BATCH_NAME_CHARS, description="What results.zip calls its outputs."
    )


class BatchRequest(BaseModel):
    """POST /v1/batches as JSON: one input template over many images."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "input": {"prompt": "put the product on a white background", "num_inference_steps": 28},
                    "images": ["https://example.com/shoe-1.jpg", {"image": "file_abc123abc123", "name": "shoe-2.jpg"}],
                }
            ]
        },
    )

    input: dict[str, Any] = Field(
        description="The edit's input for every image (prompt and settings, LoRAs included), without image_url."
    )
    images: list[str | BatchImage] = Field(description="The images: each a URL, a file id or a data URI, or an object.")
    webhook_url: str | None = Field(None, max_length=MAX_URL_CHARS, description="Called once, when the batch ends.")
    webhook_secret: str | None = Field(
        None, max_length=MAX_SECRET_CHARS, description="Signs the webhook (X-Webhook-Signature)."
    )
    prediction_webhooks: bool = Field(False, description="Also call webhook_url when each prediction ends.")

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        template = required_object(body, "input", "an object: the prompt and settings for every image")
        images = body.get("images")
        if not isinstance(images, list):
            got = "" if images is None else f" (got {shown(images)})"
            raise InputError("images", f"is required: a list of image URLs, file ids or objects{got}")
        flags = body.get("prediction_webhooks", False)
        if not isinstance(flags, bool):
            raise InputError("prediction_webhooks", f"must be true or false (got {shown(flags)})")
        return {
            "input": template,
            "images": [_batch_image(item, index) for index, item in enumerate(images)],
            "webhook_url": optional_string(body, "webhook_url", max_chars=MAX_URL_CHARS, what="a URL"),
            "webhook_secret": optional_string(body, "webhook_secret", max_chars=MAX_SECRET_CHARS),
            "prediction_webhooks": flags,
        }


def _batch_image(item: Any, index: int) -> str | BatchImage:
    field = f"images.{index}"
    if isinstance(item, str) and item:
        return item
    if not isinstance(item, dict):
        raise InputError(field, f"must be an image URL, a file id or an object with image (got {shown(item)})")
    unknown = sorted(set(item) - {"image", "prompt", "name"})
    if unknown:
        raise InputError(f"{field}.{unknown[0]}", "is not a field of a batch image (image, prompt, name)")
    for key, limit in (("image", None), ("prompt", None), ("name", MAX_BATCH_NAME_CHARS)):
        value = item.get(key)
        if key == "image" and not (isinstance(value, str) and value):
            raise InputError(f"{field}.image", f"is required: a URL, a file id or a data URI (got {shown(value)})")
        if value is not None and not (isinstance(value, str) and value):
            raise InputError(f"{field}.{key}", f"must be a non-empty string (got {shown(value)})")
        if limit is not None and value is not None and len(value) > limit:
            raise InputError(f"{field}.{key}", f"must be at most {limit} characters (got {len(value)})")
    return BatchImage(**item)


class BatchUpload(BaseModel):
    """POST /v1/batches, multipart/form-data: the images as a zip, the template as JSON text."""

    data: Annotated[bytes, BINARY] = Field(
        description="A .zip of JPEG, PNG or WebP images (others are listed as skipped), with an optional "
        "prompts.csv (name,prompt) or prompts.jsonl ({name, prompt} per line) for per-image prompts."
    )
    input: str = Field(description='The template as JSON text, e.g. {"prompt": "...", "num_inference_steps": 28}.')
    webhook_url: str | None = Field(None, description="Called once, when the batch ends.")
    webhook_secret: str | None = Field(None, description="Signs the webhook.")
    prediction_webhooks: bool = Field(False, description="Also call webhook_url when each prediction ends.")


class BatchCounts(BaseModel):
    created: int
    starting: int
    processing: int
    success: int
    error: int
    cancelled: int


class BatchProgress(BaseModel):
    done: int = Field(description="Predictions that have ended, whatever their end.")
    total: int
    percent: float


class BatchSkip(BaseModel):
    name: str
    reason: str


class BatchUrls(BaseModel):
    get: str
    cancel: str
    items: str
    results: str


class BatchView(BaseModel):
    """A batch: its counts and progress are its predictions'; it ends when the last of them does."""

    id: str
    status: Literal[Status.processing, Status.success, Status.cancelled] = Field(
        description="processing until every prediction has ended, then success (whatever each one's end); "
        "cancelled after a cancel."
    )
    total: int
    counts: BatchCounts
    progress: BatchProgress
    cost: float = Field(description="Dollars spent so far: its successful predictions.")
    estimated_seconds_left: float | None = Field(description="From the pace so far; null before the first end.")
    skipped: list[BatchSkip] = Field(description="Members of the zip that are not images, with the reason.")
    input: dict[str, Any] = Field(description="The template.")
    urls: BatchUrls
    created_at: str | None
    completed_at: str | None


class BatchList(BaseModel):
    data: list[BatchView]
    next_cursor: str | None
    next: str | None = Field(description="The URL of the next page, null on the last one.")


class BatchItem(BaseModel):
    index: int
    name: str
    prediction_id: str
    status: Status
    output: list[str] = Field(description="The output URLs once it has succeeded.")
    error: str | None
    seed: str | None


class BatchItems(BaseModel):
    items: list[BatchItem]
    next: str | None = Field(description="The cursor of the next page (?cursor=), null on the last one.")
