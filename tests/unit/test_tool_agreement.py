"""Streamed and whole chat answers agree on tool calls (the same fake output read both
ways), and a malformed tool schema is a 400 before anything reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from test_openai_tools import ASK, TIME, WEATHER, client_for, streamed_calls

Answer = tuple[str, list[tuple[str, Any]], str | None]
"""(content, [(name, parsed arguments)], finish_reason) of one choice."""


def both_ways(
    models_file: Path, output: list[str], family: str = "hermes", **request: Any
) -> tuple[Answer, Answer]:
    """The whole answer and the streamed one to the same request over the same output."""
    args: dict[str, Any] = {"model": "a", "messages": ASK, "tools": [WEATHER, TIME], **request}
    with client_for(models_file, output, family) as (oai, _):
        reply = oai.chat.completions.create(**args)
        chunks = list(oai.chat.completions.create(**args, stream=True))
    choice = reply.choices[0]
    whole_calls = [
        (c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []
    ]
    whole = (choice.message.content or "", whole_calls, choice.finish_reason)
    calls, content, finishes = streamed_calls(chunks)
    assert not any(finishes[:-1])  # finish_reason only on the last chunk
    streamed_calls_ = [(c["name"], json.loads(c["arguments"])) for c in calls.values()]
    if streamed_calls_ and not content.strip():
        content = ""  # the whole answer's content is null beside calls alone
    return whole, (content, streamed_calls_, finishes[-1])


# -- item: a call cut off by max_tokens ---------------------------------------------------

# Chunks whose first one already holds a call's name and the start of its arguments, so a
# limit of one token leaves a call announced and unfinished.
CUT = {
    "hermes": ['<tool_call>\n{"name": "get_weather", "arguments": {"city": ', '"Paris"}}'],
    "llama3": ['{"name": "get_weather", "parameters": {"city": ', '"Paris"}}'],
    "mistral": ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": ', '"Paris"}}]'],
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("family", sorted(CUT))
@pytest.mark.parametrize("tool_choice", ["required", "named", "auto"])
def test_a_call_cut_by_max_tokens_is_text_streamed_or_not(
    models_file: Path, family: str, tool_choice: str
) -> None:
    choice: Any = NAMED if tool_choice == "named" else tool_choice
    whole, streamed = both_ways(models_file, CUT[family], family, tool_choice=choice, max_tokens=1)
    assert whole == streamed
    content, calls, finish = whole
    assert calls == [] and finish == "length"
    # The text the model wrote for the call is the content, as it wrote it.
    assert content == CUT[family][0]


def test_complete_calls_before_a_cut_one_stay_calls(models_file: Path) -> None:
    first = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
    output = [first, '<tool_call>\n{"name": "get_weather", "arguments": {"ci', 'ty": "P"}}']
    whole, streamed = both_ways(models_file, output, tool_choice="required", max_tokens=2)
    assert whole == streamed
    content, calls, finish = whole
    assert calls == [("get_time", {})]
    assert finish == "tool_calls"  # a whole call was sent: the client acts on it
    assert content == '<tool_call>\n{"name": "get_weather", "arguments": {"ci'


@pytest.mark.parametrize("tool_choice", ["required", "auto"])
def test_a_whole_call_agrees_both_ways(models_file: Path, tool_choice: str) -> None:
    output = ["Sure.", '<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}']
    whole, streamed = both_ways(models_file, output, tool_choice=tool_choice)
    assert whole == streamed
    assert whole[1:] == ([("get_weather", {"city": "Oslo"})], "tool_calls")


# -- item: auto mode keeps an invalid call's text ----------------------------------------

INVALID_THEN_TEXT = {
    "hermes": '<tool_call>{"name": "nope", "arguments": {}}</tool_call> and more text',
    "llama3": '{"name": "nope", "parameters": {}} and more text',
    "mistral": '[TOOL_CALLS][{"name": "nope", "arguments": {}}] and more text',
}


@pytest.mark.parametrize("family", sorted(INVALID_THEN_TEXT))
def test_auto_unknown_tool_then_text_keeps_all_text(models_file: Path, family: str) -> None:
    text = INVALID_THEN_TEXT[family]
    # In pieces, so the text after the call arrives after the call was read.
    output = [text[:12], text[12:30], text[30:]]
    whole, streamed = both_ways(models_file, output, family)
    assert whole == streamed
    assert whole == (text, [], "stop")


def test_auto_invalid_arguments_then_text_keeps_all_text(models_file: Path) -> None:
    text = (
        'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": 7}}\n'
        "</tool_call>\nThat did not work."
    )
    whole, streamed = both_ways(models_file, [text[:20], text[20:70], text[70:]])
    assert whole == streamed == (text, [], "stop")


def test_auto_one_invalid_call_makes_all_calls_text(models_file: Path) -> None:
    text = (
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>'
    )
    whole, streamed = both_ways(models_file, [text[:40], text[40:]])
    assert whole == streamed == (text, [], "stop")


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
