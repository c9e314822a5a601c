"""A malformed tool schema is a 400 before anything reads it, streamed or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from test_openai_tools import ASK, WEATHER, client_for

CUT = {"hermes": ['<tool_call>\n{"name": "get_weather", "arguments": {"city": ', '"Paris"}}']}


# -- item: malformed tool schemas -----------------------------------------------------------

BAD_SCHEMAS = [
    ({"type": 5, "required": 5}, "parameters.type must be one of"),
    ({"type": "object", "required": "city"}, "parameters.required must be a list of strings"),
    ({"type": "object", "required": [5]}, "parameters.required must be a list of strings"),
    ({"type": "object", "properties": ["city"]}, "parameters.properties must be an object"),
    (
        {"type": "object", "properties": {"unit": {"enum": "abc"}}},
        "parameters.properties.unit.enum must be a non-empty list",
    ),
    (
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": "3"}}},
        "parameters.properties.n.minimum must be a number",
    ),
    (
        {"type": "object", "properties": {"s": {"type": "string", "maxLength": -1}}},
        "parameters.properties.s.maxLength must be a non-negative integer",
    ),
    (
        {"type": "object", "properties": {"xs": {"type": "array", "items": 5}}},
        "parameters.properties.xs.items must be a JSON Schema",
    ),
    ({"type": "object", "anyOf": "x"}, "parameters.anyOf must be a non-empty list"),
    ({"type": "object", "additionalProperties": 3}, "parameters.additionalProperties must"),
    ({"type": "string"}, 'parameters.type must be "object"'),
    (
        {"type": "object", "properties": {"a": {"type": "strin"}}},
        "parameters.properties.a.type must be",
    ),
]


def _bad_tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "broken", "parameters": parameters}}


@pytest.mark.parametrize(("parameters", "expected"), BAD_SCHEMAS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_tool_schema_is_a_400(
    models_file: Path, parameters: Any, expected: str, stream: bool
) -> None:
    with client_for(models_file, CUT["hermes"]) as (oai, factory):
        for choice in ("auto", "required", "none"):
            with pytest.raises(openai.BadRequestError) as caught:
                oai.chat.completions.create(
                    model="a",
                    messages=ASK,
                    tools=[WEATHER, _bad_tool(parameters)],  # type: ignore[list-item]
                    tool_choice=choice,  # type: ignore[arg-type]
                    stream=stream,
                )
            message = caught.value.message
            assert "tools[1].function." + expected in message, message
            assert "'broken'" in message and caught.value.param == "tools"
        assert factory.engines == [] or factory.last.seen == []  # nothing was generated


def test_a_well_formed_rich_schema_is_accepted(models_file: Path) -> None:
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 40},
            "days": {"type": ["integer", "null"], "minimum": 1, "maximum": 7},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            "when": {"anyOf": [{"type": "string"}, {"const": 0}]},
            "extra": {"type": "object", "additionalProperties": {"type": "number"}},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    output = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}']
    with client_for(models_file, output) as (oai, _):
        reply = oai.chat.completions.create(model="a", messages=ASK, tools=[tool])  # type: ignore[list-item]
    [call] = reply.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Rome", "days": 2}
