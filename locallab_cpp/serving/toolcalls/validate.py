"""A small JSON Schema check of tool-call arguments (no dependency): the keywords tool
schemas use (type, properties, required, additionalProperties, enum, const, items,
anyOf/oneOf/allOf, string and array lengths, numeric bounds); others are ignored.

:func:`schema_problem` checks that a tool's ``parameters`` use those keywords in their
JSON Schema shape, so a request with a malformed schema is refused when it arrives.
:func:`validate_arguments` never raises on an odd schema all the same (a keyword of the
wrong shape is skipped): it runs after the generation, where an exception would be a 500
or a stream that stops without its error event.
"""

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
    "integer": int,
    "number": float,
}
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_BOUNDS = ("minimum", "maximum")


def _is_number(value: Any) -> bool:
    # bool is an int in Python, never a number in JSON.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return _is_number(value)
    expected = _TYPES.get(name)
    return expected is None or isinstance(value, expected)


def _type_names(types: Any) -> list[str] | None:
    """The names a ``type`` keyword allows; None when it has no usable shape."""
    if isinstance(types, str):
        return [types]
    if isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        return list(types)
    return None


def _count(schema: Mapping[str, Any], keyword: str) -> int | None:
    value = schema.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bound(schema: Mapping[str, Any], keyword: str) -> float | None:
    value = schema.get(keyword)
    return value if _is_number(value) else None


def _error(value: Any, schema: Any, path: str) -> str | None:
    """Why ``value`` fails ``schema`` (None: it does not)."""
    if schema is False:
        return f"{path}: no value is allowed"
    if not isinstance(schema, Mapping):
        return None
    names = _type_names(schema.get("type"))
    if names is not None and not any(_is_type(value, n) for n in names):
        return f"{path}: expected {' or '.join(names)}, got {json.dumps(value)[:40]}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: must be {json.dumps(schema['const'])[:80]}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{path}: must be one of {json.dumps(enum)[:80]}"
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if (
            isinstance(options, list)
            and options
            and all(_error(value, s, path) is not None for s in options)
        ):
            return f"{path}: matches none of the {keyword} schemas"
    every = schema.get("allOf")
    for sub in every if isinstance(every, list) else ():
        if (reason := _error(value, sub, path)) is not None:
            return reason
    if isinstance(value, dict):
        return _object_error(value, schema, path)
    if isinstance(value, list):
        return _array_error(value, schema, path)
    if isinstance(value, str):
        if (least := _count(schema, "minLength")) is not None and len(value) < least:
            return f"{path}: shorter than {least} characters"
        if (most := _count(schema, "maxLength")) is not None and len(value) > most:
            return f"{path}: longer than {most} characters"
    if _is_number(value):
        if (low := _bound(schema, "minimum")) is not None and value < low:
            return f"{path}: less than {low}"
        if (high := _bound(schema, "maximum")) is not None and value > high:
            return f"{path}: more than {high}"
    return None


def _array_error(value: list[Any], schema: Mapping[str, Any], path: str) -> str | None:
    if (least := _count(schema, "minItems")) is not None and len(value) < least:
        return f"{path}: fewer than {least} items"
    if (most := _count(schema, "maxItems")) is not None and len(value) > most:
        return f"{path}: more than {most} items"
    items = schema.get("items")
    if isinstance(items, Mapping | bool):
        for i, item in enumerate(value):
            if (reason := _error(item, items, f"{path}[{i}]")) is not None:
                return reason
    return None


def _object_error(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> str | None:
    required = schema.get("required")
    for key in required if isinstance(required, list) else ():
        if isinstance(key, str) and key not in value:
            return f"{path}: missing required property '{key}'"
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
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
    any object), else a short reason. Never raises."""
    try:
        value = json.loads(arguments_json)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        return f"arguments are not valid JSON: {str(exc)[:80]}"
    if not isinstance(value, dict):
        return "arguments are not a JSON object"
    try:
        return _error(value, schema or {"type": "object"}, "arguments")
    except RecursionError:
        return "arguments are nested too deeply to check"


# ----- the shape of a schema -----------------------------------------------------------------


def schema_problem(schema: Any, path: str) -> str | None:
    """What is malformed in the arguments schema ``schema`` found at ``path`` (a sentence
    naming the field, e.g. "tools[0].function.parameters.required must be a list of
    strings"), or None. Only the keywords :func:`validate_arguments` reads are checked."""
    if not isinstance(schema, Mapping):
        return f"{path} must be a JSON Schema object"
    names = _type_names(schema.get("type"))
    if names is not None and "object" not in names:
        return f'{path}.type must be "object": the arguments are a JSON object'
    return _shape_problem(schema, path, depth=0)


_MAX_DEPTH = 64  # deeper schemas are refused rather than walked (and grammar-converted)


def _shape_problem(schema: Any, path: str, depth: int) -> str | None:
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, Mapping):
        return f"{path} must be a JSON Schema (an object or a boolean)"
    if depth > _MAX_DEPTH:
        return f"{path} is nested more than {_MAX_DEPTH} levels deep"
    problems = _keyword_problems(schema, path)
    if problems:
        return problems[0]
    nested: list[tuple[Any, str]] = []
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        nested += [(sub, f"{path}.properties.{key}") for key, sub in properties.items()]
    if "additionalProperties" in schema:
        nested.append((schema["additionalProperties"], f"{path}.additionalProperties"))
    if "items" in schema:
        nested.append((schema["items"], f"{path}.items"))
    for keyword in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(keyword) or ()):
            nested.append((sub, f"{path}.{keyword}[{i}]"))
    for sub, where in nested:
        if (problem := _shape_problem(sub, where, depth + 1)) is not None:
            return problem
    return None


def _keyword_problems(schema: Mapping[str, Any], path: str) -> list[str]:
    """The keywords of one schema level that have the wrong shape."""
    problems: list[str] = []
    if "type" in schema:
        names = _type_names(schema["type"])
        if names is None or any(n not in _TYPES for n in names):
            problems.append(
                f"{path}.type must be one of {', '.join(sorted(_TYPES))}, or a list of them"
            )
    if "properties" in schema and not isinstance(schema["properties"], Mapping):
        problems.append(f"{path}.properties must be an object of schemas")
    required = schema.get("required")
    if "required" in schema and not (
        isinstance(required, list) and all(isinstance(k, str) for k in required)
    ):
        problems.append(f"{path}.required must be a list of strings")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        problems.append(f"{path}.enum must be a non-empty list")
    for keyword in _SUBSCHEMA_LISTS:
        if keyword in schema and not (isinstance(schema[keyword], list) and schema[keyword]):
            problems.append(f"{path}.{keyword} must be a non-empty list of schemas")
    for keyword in _COUNTS:
        count = _count(schema, keyword)
        if keyword in schema and (count is None or count < 0):
            problems.append(f"{path}.{keyword} must be a non-negative integer")
    for keyword in _BOUNDS:
        if keyword in schema and _bound(schema, keyword) is None:
            problems.append(f"{path}.{keyword} must be a number")
    return problems
