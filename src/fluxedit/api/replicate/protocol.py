"""Replicate's wire format, as its official client sends and reads it: a pydantic model for every body.

A create request is checked in the order of the hand-written parsing it replaces, with the same messages,
each naming Replicate's field (input.input_image, not our input.image_url).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from ...resolution import ASPECT_RATIOS
from ...schema import MAX_PROMPT_CHARS, MAX_SEED, OUTPUT_RESOLUTIONS, EditInput, InputError, validated_input
from ...service.fetch import MAX_URL_CHARS
from ...service.intake import VERSION
from ...service.notify import EVENTS
from ..bodies import optional_string, required_object, shown
from .inputs import MATCH_INPUT, MODEL_NAME, their_error, to_edit_input

VERSIONS = (VERSION, MODEL_NAME, f"{MODEL_NAME}:{VERSION}")  # an id, or a model reference as Replicate allows
ReplicateStatus = Literal["starting", "processing", "succeeded", "failed", "canceled"]


class ReplicateInput(BaseModel):
    """The input of black-forest-labs/flux-kontext-dev, by Replicate's names and within this server's limits."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The edit instruction.")
    input_image: str = Field(min_length=1, description="The image to edit: a URL, a data URI or a file of ours.")
    aspect_ratio: Literal[MATCH_INPUT, *ASPECT_RATIOS] = MATCH_INPUT  # type: ignore[valid-type]
    num_inference_steps: int = Field(28, ge=1, le=50)
    guidance: float = Field(2.5, ge=0, le=20)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    output_format: Literal["webp", "jpg", "png"] | None = Field(None, description="Default: the input's own.")
    output_quality: int = Field(90, ge=1, le=100)
    disable_safety_checker: bool = False
    go_fast: bool = False
    lora_weights: str | None = Field(None, description="A LoRA: a registered name, a URL or owner/repo.")
    lora_strength: float | None = Field(None, ge=-4, le=4)
    mask: str | None = Field(
        None,
        description="Where the edit may change the picture (white: inpaint, black: keep), the image's size: "
        "a URL, a data URI or a file of ours.",
    )
    strength: float = Field(1.0, ge=0, le=1, description="With a mask: how far the masked part may move.")
    output_resolution: Literal[*OUTPUT_RESOLUTIONS] = Field(  # type: ignore[valid-type]
        "model", description="model (~1 MP) or input (the input image's own size, up to 40 MP)."
    )


# Read as a plain object and translated to ours (inputs.py), so each refusal names their field; documented
# by their names (ReplicateInput has no nested models, so its schema stands inline).
TheirInput = Annotated[dict[str, Any], WithJsonSchema(ReplicateInput.model_json_schema())]


class CreateRequest(BaseModel):
    """What both create requests take besides the model: the input, the webhook and its events."""

    model_config = ConfigDict(extra="ignore")

    input: TheirInput
    webhook: str | None = Field(None, max_length=MAX_URL_CHARS, description="Called as the prediction changes.")
    webhook_events_filter: list[Literal[EVENTS]] | None = Field(  # type: ignore[valid-type]
        None, description="Which changes call the webhook (default: output and completed)."
    )
    edit_input: SkipJsonSchema[EditInput | None] = Field(None, exclude=True)  # the input translated to ours

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        given = required_object(body, "input", "an object with at least prompt and input_image")
        webhook = optional_string(body, "webhook", max_chars=MAX_URL_CHARS, what="a URL")
        events = body.get("webhook_events_filter")
        if events is not None:
            if not isinstance(events, list) or not all(isinstance(event, str) and event in EVENTS for event in events):
                raise InputError(
                    "webhook_events_filter", f"must be a list of events from {', '.join(EVENTS)} (got {shown(events)})"
                )
            events = list(dict.fromkeys(events)) or None
        try:
            edit_input = validated_input(to_edit_input(given), prefix="input.")
        except InputError as error:
            raise their_error(error) from None
        return {**body, "input": given, "webhook": webhook, "webhook_events_filter": events, "edit_input": edit_input}


class ModelPredictionRequest(CreateRequest):
    """POST /v1/models/black-forest-labs/flux-kontext-dev/predictions (what replicate.run sends)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"input": {"prompt": "make it a watercolour", "input_image": "https://example.com/a.jpg"}}]
        },
    )


class VersionPredictionRequest(CreateRequest):
    """POST /v1/predictions: the same, naming the version (or the model) it runs."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "version": VERSION,
                    "input": {"prompt": "make it a watercolour", "input_image": "https://example.com/a.jpg"},
                }
            ]
        },
    )

    version: Literal[VERSIONS]  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _version(cls, body: Any) -> Any:
        if isinstance(body, dict):
            version = body.get("version")
            if not isinstance(version, str) or version not in VERSIONS:
                got = "" if version is None else f" (got {shown(version)})"
                raise InputError("version", f"must be {VERSION} or {MODEL_NAME}: the model this server runs{got}")
        return body


# --- responses --------------------------------------------------------------------------------------------------


class ReplicatePredictionUrls(BaseModel):
    get: str
    cancel: str


class ReplicatePrediction(BaseModel):
    """A prediction as Replicate shows it: its five statuses, one output URL (a list for several images)."""

    id: str
    model: str
    version: str | None
    input: dict[str, Any] = Field(description="The input by Replicate's names; an inline image shown as its URL.")
    status: ReplicateStatus
    output: str | list[str] | None
    error: str | None
    logs: str | None
    metrics: dict[str, float] = Field(description="predict_time and total_time in seconds, once known.")
    urls: ReplicatePredictionUrls
    source: Literal["api"] = "api"
    data_removed: bool
    created_at: str | None
    started_at: str | None
    completed_at: str | None


class ReplicatePredictionList(BaseModel):
    previous: str | None
    next: str | None = Field(description="The URL of the next page, null on the last one.")
    results: list[ReplicatePrediction]


class WebhookSecret(BaseModel):
    key: str = Field(description="Signs this key's webhooks (Standard Webhooks: webhook-signature).")


class InvalidField(BaseModel):
    type: str
    field: str
    description: str


class ProblemDetails(BaseModel):
    """Every error on Replicate's paths (RFC 7807), which its client raises as ReplicateError."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"title": "Not found", "detail": "prediction p_1 not found", "status": 404}]}
    )

    title: str
    detail: str
    status: int
    invalid_fields: list[InvalidField] | None = Field(None, description="On a 422: the field the detail names.")
