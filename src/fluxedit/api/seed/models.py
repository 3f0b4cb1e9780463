"""GET /v1/models/flux-kontext-dev: the input's JSON Schema and the price rule (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...schema import MODEL_SLUG, EditInput
from ...service.pricing import price_rule
from ...service.runner import VERSION
from ..deps import services
from ..errors import not_found

router = APIRouter(prefix="/v1/models", tags=["models"])


def request_schema() -> dict:
    schema = EditInput.model_json_schema()
    schema["properties"].pop("write_metadata", None)  # an engine option, not part of the API
    return schema


def model_card(price_per_image: float) -> dict:
    return {
        "title": "FLUX.1 Kontext [dev]",
        "slug": MODEL_SLUG,
        "version": VERSION,
        "description": "Edit an image with a text instruction: style transfer, object and background changes, "
        "text editing, character consistency. Open weights by Black Forest Labs, running on this server.",
        "output_type": "image",
        "request_schema": request_schema(),
        "cost": price_rule(price_per_image),
    }


@router.get("")
async def list_models(request: Request) -> dict:
    return {"data": [model_card(services(request).settings.price_per_image)]}


@router.get("/{slug}")
async def get_model(request: Request, slug: str) -> dict:
    if slug != MODEL_SLUG:
        raise not_found(f"model {slug}")
    return model_card(services(request).settings.price_per_image)
