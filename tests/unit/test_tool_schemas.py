"""The argument check on odd schemas (it must answer, never raise) and the shape check that
refuses a malformed ``parameters`` schema when a request arrives."""

from __future__ import annotations

from typing import Any

import pytest

from locallab_cpp.serving.tools import schema_problem, validate_arguments

ODD_SCHEMAS: list[Any] = [
    {"type": 5, "required": 5},
    {"type": [5, None]},
    {"required": "city"},
    {"required": [["a"]]},
    {"properties": ["city"]},
    {"properties": "city"},
    {"properties": {"u": {"enum": "abc"}}},
    {"properties": {"u": {"enum": 3}}},
    {"properties": {"n": {"minimum": "3", "maximum": None}}},
    {"properties": {"s": {"minLength": "2", "maxLength": [1]}}},
    {"properties": {"xs": {"items": 5, "minItems": "1", "maxItems": {}}}},
    {"anyOf": "x", "oneOf": 5, "allOf": "y"},
    {"additionalProperties": 3},
    5,
    "schema",
    [],
]
ARGUMENTS = [
    '{"city": "Paris", "u": "a", "n": 1, "s": "x", "xs": [1]}',
    "{}",
    '{"extra": [1, {"a": null}]}',
]


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_validate_arguments_answers_on_odd_schemas(schema: Any, arguments: str) -> None:
    reason = validate_arguments(arguments, schema)
    assert reason is None or isinstance(reason, str)


def test_a_string_enum_is_skipped_not_searched() -> None:
    # Searched as a string, 1 in "abc" raises TypeError, and "b" would pass as a value.
    assert validate_arguments('{"u": 1}', {"properties": {"u": {"enum": "abc"}}}) is None
    assert validate_arguments('{"u": "b"}', {"properties": {"u": {"enum": ["abc"]}}})


def test_a_string_required_is_not_read_as_letters() -> None:
    # Read as a list, "city" would require the properties "c", "i", "t" and "y".
    assert validate_arguments('{"city": "Paris"}', {"required": "city"}) is None
    assert validate_arguments("{}", {"required": ["city"]})


def test_deeply_nested_arguments_are_a_reason() -> None:
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    reason = validate_arguments(deep, {"type": "object"})
    assert reason is not None and "JSON" in reason


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
def test_schema_problem_finds_every_odd_schema(schema: Any) -> None:
    problem = schema_problem(schema, "tools[0].function.parameters")
    assert problem is not None and problem.startswith("tools[0].function.parameters")


@pytest.mark.parametrize(
    "schema",
    [
        {},
        {"type": "object"},
        {"type": ["object", "null"], "properties": {}},
        {"properties": {"a": True, "b": False, "c": {}}, "additionalProperties": False},
        {"properties": {"a": {"type": "array", "items": {"type": ["string", "integer"]}}}},
        {"properties": {"a": {"description": "free text", "format": "date", "x-odd": 5}}},
        {"oneOf": [{"required": ["a"]}, {"required": ["b"]}], "minProperties": 1},
        {"properties": {"n": {"type": "number", "minimum": -1.5, "maximum": 10}}},
    ],
)
def test_schema_problem_accepts_well_formed_schemas(schema: Any) -> None:
    assert schema_problem(schema, "p") is None


def test_schema_problem_stops_at_a_depth() -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        schema = {"type": "object", "properties": {"a": schema}}
    problem = schema_problem(schema, "p")
    assert problem is not None and "nested more than" in problem
