"""Tool calling on /v1/chat/completions over a fake engine that writes each model family's
call format, driven by the official ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes import FakeFactory
from helpers import make_client

BASE_URL = "http://testserver.local/v1"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "weather in Paris?"}]

# (tool_format, the chunks a model of that family writes for one call)
FAMILIES = {
    "hermes": [
        '<tool_call>\n{"name": "get_weather", ',
        '"arguments": {"city": ',
        '"Paris"}}\n</tool_call>',
    ],
    "llama3": ['{"name": "get_weather", ', '"parameters": {"city": "Paris"}}'],
    "mistral": ['[TOOL_CALLS][{"name": "get_weather", ', '"arguments": {"city": "Paris"}}]'],
}


@contextmanager
def client_for(
    models_file: Path, output: list[str], family: str = "hermes"
) -> Iterator[tuple[openai.OpenAI, FakeFactory]]:
    factory = FakeFactory(output=output, tool_format=family)
    with make_client(models_file, factory) as http:
        yield (
            openai.OpenAI(api_key="x", base_url=BASE_URL, http_client=http, max_retries=0),
            factory,
        )


def streamed_calls(chunks: list[Any]) -> tuple[dict[int, dict[str, Any]], str, list[str | None]]:
    """(call index -> {id, name, arguments}, content, finish reasons) of a chat stream;
    asserts OpenAI's order: a call's first delta has id, type, name and empty arguments."""
    calls: dict[int, dict[str, Any]] = {}
    content = ""
    finishes = []
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finishes.append(choice.finish_reason)
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:
                assert delta.id and delta.type == "function"
                assert delta.function.name and delta.function.arguments == ""
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None and not delta.function.name
                calls[delta.index]["arguments"] += delta.function.arguments
    return calls, content, finishes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_call_whole(models_file: Path, family: str) -> None:
    with client_for(models_file, FAMILIES[family], family) as (oai, factory):
        reply = oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The tools reached the model's template; auto adds no grammar.
    assert factory.last.chat_tools[-1] == [WEATHER]
    assert factory.last.seen[-1].grammar is None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_call_streamed(models_file: Path, family: str) -> None:
    with client_for(models_file, FAMILIES[family], family) as (oai, _):
        chunks = list(
            oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER], stream=True)
        )
    calls, content, finishes = streamed_calls(chunks)
    assert content.strip() == ""
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert finishes[-1] == "tool_calls" and not any(finishes[:-1])


def test_content_before_a_call_stays_content(models_file: Path) -> None:
    output = ["Let me check.", *FAMILIES["hermes"]]
    with client_for(models_file, output) as (oai, _):
        reply = oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER])
        chunks = list(
            oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER], stream=True)
        )
    message = reply.choices[0].message
    assert (message.content or "").strip() == "Let me check."
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    calls, content, _ = streamed_calls(chunks)
    assert content.strip() == "Let me check." and len(calls) == 1


def test_auto_call_with_invalid_arguments_stays_text(models_file: Path) -> None:
    output = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": 7}}\n</tool_call>']
    with client_for(models_file, output) as (oai, _):
        reply = oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER])
        chunks = list(
            oai.chat.completions.create(model="a", messages=ASK, tools=[WEATHER], stream=True)
        )
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert "get_weather" in (choice.message.content or "")
    calls, content, finishes = streamed_calls(chunks)
    assert calls == {} and "get_weather" in content and finishes[-1] == "stop"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_required_and_named_use_a_grammar(models_file: Path, family: str) -> None:
    with client_for(models_file, FAMILIES[family], family) as (oai, factory):
        reply = oai.chat.completions.create(
            model="a", messages=ASK, tools=[WEATHER, TIME], tool_choice="required"
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        grammar = factory.last.seen[-1].grammar
        assert grammar and "get_time" in grammar and "get_weather" in grammar
        named = {"type": "function", "function": {"name": "get_weather"}}
        chunks = list(
            oai.chat.completions.create(
                model="a", messages=ASK, tools=[WEATHER, TIME], tool_choice=named, stream=True
            )
        )
        grammar = factory.last.seen[-1].grammar
        assert grammar and "get_weather" in grammar and "get_time" not in grammar
    calls, _, finishes = streamed_calls(chunks)
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert finishes[-1] == "tool_calls"


def test_tool_choice_none_offers_no_tools(models_file: Path) -> None:
    with client_for(models_file, FAMILIES["hermes"]) as (oai, factory):
        reply = oai.chat.completions.create(
            model="a", messages=ASK, tools=[WEATHER], tool_choice="none"
        )
    assert factory.last.chat_tools[-1] is None
    assert reply.choices[0].message.tool_calls is None
    assert "<tool_call>" in (reply.choices[0].message.content or "")


def test_impossible_tool_choices_are_400(models_file: Path) -> None:
    with client_for(models_file, FAMILIES["hermes"]) as (oai, _):
        with pytest.raises(openai.BadRequestError):
            oai.chat.completions.create(model="a", messages=ASK, tool_choice="required")
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(
                model="a",
                messages=ASK,
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "nope"}},
            )
    assert caught.value.param == "tool_choice"


def test_tool_results_reach_the_template(models_file: Path) -> None:
    with client_for(models_file, ["It is sunny."]) as (oai, factory):
        reply = oai.chat.completions.create(
            model="a",
            tools=[WEATHER],
            messages=[
                *ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        )
    assert reply.choices[0].message.content == "It is sunny."
    sent = factory.last.chat_calls[-1]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
