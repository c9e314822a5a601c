"""A small JSON Schema check of tool-call arguments (no dependency): the keywords tool
schemas use (type, properties, required, additionalProperties, enum, const, items,
anyOf/oneOf/allOf, string and array lengths, numeric bounds); others are ignored."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    # bool is an int in Python, never a number in JSON.
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _TYPES.get(name)
    return expected is None or isinstance(value, expected)


def _error(value: Any, schema: Any, path: str) -> str | None:
    """Why ``value`` fails ``schema`` (None: it does not)."""
    if schema is True or not isinstance(schema, Mapping):
        return None if schema is not False else f"{path}: no value is allowed"
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, n) for n in names):
            return f"{path}: expected {' or '.join(names)}, got {json.dumps(value)[:40]}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: must be {json.dumps(schema['const'])}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: must be one of {json.dumps(schema['enum'])[:80]}"
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if options and all(_error(value, s, path) is not None for s in options):
            return f"{path}: matches none of the {keyword} schemas"
    for sub in schema.get("allOf") or ():
        if (reason := _error(value, sub, path)) is not None:
            return reason
    if isinstance(value, dict):
        return _object_error(value, schema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path}: fewer than {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path}: more than {schema['maxItems']} items"
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                if (reason := _error(item, items, f"{path}[{i}]")) is not None:
                    return reason
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{path}: shorter than {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path}: longer than {schema['maxLength']} characters"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: less than {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: more than {schema['maximum']}"
    return None


def _object_error(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> str | None:
    for key in schema.get("required") or ():
        if key not in value:
            return f"{path}: missing required property '{key}'"
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in properties:
            reason = _error(item, properties[key], where)
        elif extra is False:
            reason = f"{path}: unexpected property '{key}'"
        else:
            reason = _error(item, extra, where)
        if reason is not None:
            return reason
    return None


def validate_arguments(arguments_json: str, schema: Mapping[str, Any] | None) -> str | None:
    """None when ``arguments_json`` is a JSON object valid under ``schema`` (None or empty:
    any object), else a short reason."""
    try:
        value = json.loads(arguments_json)
    except ValueError as exc:
        return f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return "arguments are not a JSON object"
    return _error(value, schema or {"type": "object"}, "arguments")
