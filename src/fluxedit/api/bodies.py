"""JSON request bodies, read with a size limit and refused with a clear message.

Only what JSON itself allows comes through: no NaN or Infinity (they cannot be sent back in a JSON
answer), and no nesting deeper than any body of ours needs (deeper structures recurse in every
later step: parsing, validation, storing, answering). The top-level fields of a body are then read
with the small checkers below, so a wrong type gets a message naming the field, never a 500.
"""

from __future__ import annotations

import json

from fastapi import Request

from ..schema import InputError
from .errors import ApiError

MAX_JSON_BYTES = 72 * 1024 * 1024  # a 50 MB image as a data URI, plus room for the rest
MAX_JSON_DEPTH = 32  # ours need 4 (body, input, loras, one LoRA)
MAX_SHOWN_CHARS = 80  # of a refused value, in its message


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
