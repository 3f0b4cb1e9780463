"""Tool parameters that advertise the server's own limits without enforcing them here.

The JSON Schema an assistant reads shows each limit (minimum, maximum, choices) as the server's models
define it, but the value is not checked by the MCP layer: the server checks it, and its message (naming
the field and the limit) is what the assistant gets back. Leaving a parameter out means the server's
default, which the description names.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, Field

KEPT = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "minLength", "maxLength",
        "maxItems", "pattern")  # fmt: skip


def server_limited(model: type[BaseModel], name: str, description: str) -> Any:
    """For an optional parameter (`= None`: not sent) whose schema is the server field's, non-null."""
    limits, default = _server_property(model, name)
    if default is not None:
        description = f"{description} Default: {default}."

    def schema(found: dict[str, Any]) -> None:
        found.clear()
        found.update({**limits, "description": description})

    return Field(description=description, json_schema_extra=schema)


@cache
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _server_property(model: type[BaseModel], name: str) -> tuple[dict[str, Any], Any]:
    whole = _model_schema(model)
    field = dict(whole["properties"][name])
    branches = [branch for branch in field.pop("anyOf", []) if branch.get("type") != "null"]
    if branches:
        field = {**branches[0], **field}
    if "$ref" in field:  # an enum of its own (OutputFormat)
        field = {**whole["$defs"][field.pop("$ref").rsplit("/", 1)[-1]], **field}
    if "pattern" in field and field.get("type") == "string":  # "^(attention|all)$" reads better as choices
        choices = field["pattern"].removeprefix("^(").removesuffix(")$").split("|")
        if all(choice.isidentifier() for choice in choices):
            field["enum"] = choices
            del field["pattern"]
    return {key: field[key] for key in KEPT if key in field}, field.get("default")
