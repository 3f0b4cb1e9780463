"""JSON request bodies, read with a size limit and refused with a clear message.

Only what JSON itself allows comes through: no NaN or Infinity (they cannot be sent back in a JSON
answer), and no nesting deeper than any body of ours needs (deeper structures recurse in every
later step: parsing, validation, storing, answering). The body is then validated into its endpoint's
pydantic model (each dialect's protocol.py): the models' checks use the small checkers below, so a wrong
type gets a message naming the field and the limit, never a 500 and never a list of pydantic errors.

The body is read here rather than by FastAPI so that it is counted while it streams (body_limit.py), is
JSON whatever its Content-Type says, and is refused in the dialect's own words. `request_body` documents
it in /openapi.json all the same; multipart bodies are documented the same way and read by their handlers,
which stream their files to disk under the same caps.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict

from ..schema import InputError
from .errors import ApiError

Model = TypeVar("Model", bound=BaseModel)
DOCUMENTED_MODELS: dict[str, type[BaseModel]] = {}  # request bodies' models, added to the OpenAPI components

MAX_JSON_BYTES = 72 * 1024 * 1024  # a 50 MB image as a data URI, plus room for the rest
MAX_JSON_DEPTH = 32  # ours need 4 (body, input, loras, one LoRA)
MAX_SHOWN_CHARS = 80  # of a refused value, in its message


class NoBody(BaseModel):
    """The body of a POST that takes none (a cancel): whatever is sent is ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{}]})


def JsonBody(model: type[Model]):
    """A dependency: the JSON body validated into `model` (use in Annotated[model, JsonBody(model)])."""

    async def parsed(request: Request) -> Model:
        return model.model_validate(await json_body(request))

    parsed.__name__ = f"{model.__name__}_body"
    return Depends(parsed)


def request_body(*media: tuple[str, type[BaseModel]], required: bool = True, description: str = "") -> dict:
    """`openapi_extra` documenting a body read by hand: each (media type, model) it may come as."""
    content = {}
    for media_type, model in media:
        DOCUMENTED_MODELS[model.__name__] = model
        content[media_type] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    body = {"required": required, "content": content}
    if description:
        body["description"] = description
    return {"requestBody": body}


def json_request(model: type[BaseModel], *, required: bool = True) -> dict:
    return request_body(("application/json", model), required=required)


async def json_body(request: Request) -> dict:
    # Its size is capped while it streams, declared or chunked, by body_limit.py (FLUXEDIT_MAX_JSON_BYTES).
    return parse_json_object(await request.body())


def parse_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body: is not valid JSON ({error})") from None
    except RecursionError:
        raise ApiError(400, f"request body: is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:  # NaN, Infinity
        raise ApiError(400, f"request body: is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body: must be a JSON object")
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise ApiError(400, f"request body: is nested deeper than {MAX_JSON_DEPTH} levels")
    return body


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _depth_exceeds(value: object, limit: int) -> bool:
    """Walked without recursion, so the check itself cannot overflow the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, dict | list))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False


def shown(value: object) -> str:
    """A refused value as JSON spells it, cut short: messages never echo a whole body."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def optional_string(body: dict, field: str, *, max_chars: int, what: str = "a string") -> str | None:
    """body[field] when it is a string; None when absent, null or empty; else an error naming the field."""
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(field, f"must be {what} (got {shown(value)})")
    if len(value) > max_chars:
        raise InputError(field, f"must be at most {max_chars} characters (got {len(value)})")
    return value


def required_object(body: dict, field: str, hint: str) -> dict:
    value = body.get(field)
    if not isinstance(value, dict):
        got = "" if value is None else f" (got {shown(value)})"
        raise InputError(field, f"is required: {hint}{got}")
    return value
