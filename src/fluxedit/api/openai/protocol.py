"""OpenAI's images.edit wire format: the multipart form its client sends, the ImagesResponse it reads, and
its error object. The form is read by the handler as it streams (files to disk, under the body caps), so
the form model documents it in /openapi.json; the checks are those of inputs.py, in OpenAI's words."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ...schema import MAX_PROMPT_CHARS, MAX_REFERENCE_IMAGES, MAX_SEED, MODEL_SLUG, OUTPUT_RESOLUTIONS

BINARY = WithJsonSchema({"type": "string", "format": "binary"})


class ImageEditForm(BaseModel):
    """POST /v1/images/edits, multipart/form-data. Besides OpenAI's fields, a few of ours may come along
    (the client's extra_body): seed, num_inference_steps, guidance_scale, acceleration, enable_safety_checker,
    strength and output_resolution."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[bytes, BINARY] = Field(
        description=f"The image to edit (send `image[]` several times for up to {MAX_REFERENCE_IMAGES} more "
        "reference images: the first is edited, the others guide it)."
    )
    mask: Annotated[bytes | None, BINARY] = Field(
        None,
        description="A PNG with an alpha channel, the image's size: its fully transparent pixels are the part to "
        "edit (OpenAI's rule); the rest of the picture is kept.",
    )
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: Literal[MODEL_SLUG] = MODEL_SLUG  # type: ignore[valid-type]
    n: int = Field(1, ge=1, le=4, description="Images generated.")
    size: str = Field("auto", pattern=r"^(auto|\d{1,5}x\d{1,5})$", description="auto, or WIDTHxHEIGHT (its aspect).")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=1, le=100)
    quality: Literal["auto"] = "auto"
    background: Literal["auto"] = "auto"
    stream: Literal["false"] = "false"
    user: str | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_inference_steps: int | None = Field(None, ge=1, le=50)
    guidance_scale: float | None = Field(None, ge=0, le=20)
    acceleration: Literal["none", "regular", "high"] | None = None
    enable_safety_checker: bool | None = None
    strength: float | None = Field(None, ge=0, le=1, description="With a mask: how far the masked part may move.")
    output_resolution: Literal[*OUTPUT_RESOLUTIONS] | None = Field(  # type: ignore[valid-type]
        None, description="model (~1 MP, the default) or input (the image's own size, up to 40 MP)."
    )


class ImageData(BaseModel):
    b64_json: str | None = Field(None, description="The image's bytes (response_format b64_json).")
    url: str | None = Field(None, description="Where the image is served (response_format url).")


class ImagesResponse(BaseModel):
    created: int = Field(description="When the edit was asked for, in seconds since 1970.")
    data: list[ImageData]
    output_format: str
    size: str = Field(description="WIDTHxHEIGHT of the outputs.")


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """Every error on /v1/images/: OpenAI's error object, which its client raises by status."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "n: must be at most 4",
                        "type": "invalid_request_error",
                        "param": "n",
                        "code": "invalid_value",
                    }
                }
            ]
        }
    )

    error: OpenAIErrorBody
