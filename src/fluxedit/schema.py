"""The domain contract: what an edit asks for, what it gives back, and its errors.

Every layer (CLI, engine, later the API) speaks these types. Field names are
the API's input names, so a message naming a field means the same everywhere.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from .resolution import RESOLUTION_MODES

MAX_SEED = 2**64 - 1
MAX_REFERENCE_IMAGES = 3  # besides the main image
MAX_PROMPT_CHARS = 2000
ACCELERATION_LEVELS = ("none", "regular", "high")
OUTPUT_RESOLUTIONS = ("model", "input")  # the size a result comes back at: the model's, or the input's own


class OutputFormat(StrEnum):
    jpeg = "jpeg"
    png = "png"
    webp = "webp"

    @classmethod
    def parse(cls, name: str) -> OutputFormat:
        """Accept the usual spellings of a format or file extension ("jpg", ".PNG")."""
        key = name.lower().lstrip(".")
        key = {"jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            raise InputError("output_format", f"must be jpeg, png or webp (got {name!r})") from None


class Status(StrEnum):
    """Where a prediction or a training is in its life; the seed dialect's names (other dialects translate).

    created: queued, waiting for its inputs or a worker. starting: handed to a worker. processing: running.
    success, error, cancelled: ended, for good (a training never passes through starting)."""

    created = "created"
    starting = "starting"
    processing = "processing"
    success = "success"
    error = "error"
    cancelled = "cancelled"

    @property
    def ended(self) -> bool:
        return self in ENDED_STATUSES


ENDED_STATUSES = frozenset({Status.success, Status.error, Status.cancelled})
ACTIVE_STATUSES = frozenset({Status.created, Status.starting, Status.processing})
RUNNING_STATUSES = (Status.starting, Status.processing)  # on a worker (handed over, or running)


class FluxeditError(Exception):
    """An error whose message is meant for a person, not a stack trace."""


MAX_FIELD_NAME_CHARS = 200  # a field name is echoed in messages: an unknown 10 MB key is shown cut


class InputError(FluxeditError):
    """A bad input: names the field and the limit it broke."""

    def __init__(self, field: str, problem: str):
        if len(field) > MAX_FIELD_NAME_CHARS:
            field = field[:MAX_FIELD_NAME_CHARS] + "..."
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InputDownloadError(InputError):
    """An input URL could not be fetched (network failure, timeout, HTTP error)."""


class EditCancelled(FluxeditError):
    """The edit was cancelled while it ran."""


class ModelUnavailable(FluxeditError):
    """The model weights cannot be had; the message says why and what to do."""


def refuse_booleans(value: object) -> object:
    """For a number field, before pydantic's lax parsing (which reads true as 1): JSON true is not a number.
    Whole floats (28.0) and numeric text (form fields) still parse as numbers."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "must be a number, not true or false")
    return value


def refuse_numbers(value: object) -> object:
    """For a true/false field, before pydantic's lax parsing (which reads 1 and 0 as booleans)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "must be true or false, not a number")
    return value


class EditSettings(BaseModel):
    """Everything about an edit except the images themselves."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The edit instruction.")
    num_inference_steps: int = Field(28, ge=1, le=50, description="Denoising steps.")
    guidance_scale: float = Field(2.5, ge=0.0, le=20.0, allow_inf_nan=False, description="Distilled guidance strength.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed; random when absent.")
    num_images: int = Field(1, ge=1, le=4, description="Images generated as one batch.")
    output_format: OutputFormat | None = Field(
        None, description="jpeg, png or webp; defaults to the main input image's own format."
    )
    output_quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality.")
    resolution_mode: str = Field(
        "match_input",
        json_schema_extra={"enum": list(RESOLUTION_MODES)},
        description="match_input (nearest preferred Kontext size), auto (input aspect at ~1 MP), or W:H.",
    )
    acceleration: str = Field(
        "none",
        json_schema_extra={"enum": ["none", "regular", "high"]},
        description="none (every step in full), regular (step caching) or high (caching, fp8, compiled).",
    )
    write_metadata: bool = Field(True, description="Embed prompt, seed and settings in the image file.")
    strength: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="With a mask: how far the masked region may move from the input (0 keeps it, 1 regenerates it).",
    )
    output_resolution: str = Field(
        "model",
        json_schema_extra={"enum": list(OUTPUT_RESOLUTIONS)},
        description="model (the model's ~1 MP size) or input (the input's own size; untouched pixels kept exactly).",
    )

    @field_validator(
        "num_inference_steps", "guidance_scale", "seed", "num_images", "output_quality", "strength", mode="before"
    )
    @classmethod
    def _settings_numbers(cls, value: object) -> object:
        return refuse_booleans(value)

    @field_validator("write_metadata", mode="before")
    @classmethod
    def _settings_flags(cls, value: object) -> object:
        return refuse_numbers(value)

    def model_post_init(self, _context) -> None:
        if self.resolution_mode not in RESOLUTION_MODES:
            raise InputError(
                "resolution_mode", f"must be one of {', '.join(RESOLUTION_MODES)} (got {self.resolution_mode!r})"
            )
        if not self.prompt.strip():
            raise InputError("prompt", "must not be blank")
        if self.output_resolution not in OUTPUT_RESOLUTIONS:
            raise InputError(
                "output_resolution", f"must be one of {', '.join(OUTPUT_RESOLUTIONS)} (got {self.output_resolution!r})"
            )
        if self.acceleration not in ACCELERATION_LEVELS:
            raise InputError(
                "acceleration", f"must be one of {', '.join(ACCELERATION_LEVELS)} (got {self.acceleration!r})"
            )


MODEL_SLUG = "flux-kontext-dev"
MAX_LORAS = 4
MAX_LORA_PATH_CHARS = 8192  # as long as a URL may be


class LoraRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_LORA_PATH_CHARS,
        description="An uploaded file, a registered name, a URL or owner/repo.",
    )
    scale: float = Field(1.0, ge=-4.0, le=4.0, allow_inf_nan=False)

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_number(cls, value: object) -> object:
        return refuse_booleans(value)


class EditInput(EditSettings):
    """The model's input as the API takes it: settings plus where the images are."""

    image_url: str = Field(
        min_length=1, description="The image to edit: an http(s) URL, a data URI, or a file of this server."
    )
    image_urls: list[str] = Field(
        default_factory=list, max_length=MAX_REFERENCE_IMAGES, description="Up to 3 more reference images."
    )
    mask_url: str | None = Field(
        None,
        min_length=1,
        description="Where the edit may change the picture: a greyscale or RGBA image the main image's size, "
        "white (or opaque) where it may change; a URL, a data URI, or a file of this server.",
    )
    enable_safety_checker: bool = Field(True, description="Black out outputs the safety model flags.")
    loras: list[LoraRef] = Field(default_factory=list, max_length=MAX_LORAS)

    @field_validator("enable_safety_checker", mode="before")
    @classmethod
    def _input_flags(cls, value: object) -> object:
        return refuse_numbers(value)

    def settings(self) -> EditSettings:
        return EditSettings(**self.model_dump(include=set(EditSettings.model_fields)))


def validated_input(fields: dict, prefix: str = "") -> EditInput:
    """Build EditInput from a request body's input object; errors name the field (with `prefix`)."""
    try:
        return EditInput(**fields)
    except ValidationError as error:
        problem = input_error_from(error)
        raise InputError(prefix + problem.field, problem.problem) from None
    except InputError as error:
        raise InputError(prefix + error.field, error.problem) from None


def validated_settings(**fields) -> EditSettings:
    """Build EditSettings, turning pydantic's errors into one InputError per first problem."""
    try:
        return EditSettings(**fields)
    except ValidationError as error:
        raise input_error_from(error) from None


def input_error_from(error: ValidationError) -> InputError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "input"
    ctx = first.get("ctx") or {}
    given = first.get("input")
    problem = _limit_message(first["type"], ctx, first["msg"])
    if given is not None and not isinstance(given, dict | list) and first["type"] != "missing":
        shown = ("true" if given else "false") if isinstance(given, bool) else repr(given)  # as JSON spells it
        problem += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
    return InputError(field, problem)


def _limit_message(kind: str, ctx: dict, default: str) -> str:
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "extra_forbidden":
        return "is not a known input"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "missing":
        return "is required"
    return default[0].lower() + default[1:]
