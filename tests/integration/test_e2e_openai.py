"""The OpenAI-compatible API end to end: the official ``openai`` client against the real
server and the embedded Gemma 3 270M base model.

A base model this small answers badly; these tests check shapes, counts, grammars and the
protocol, never the quality of an answer. Token limits stay small to keep the file fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from it_support import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
ASK = [{"role": "user", "content": "Say something about the sea."}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["C", "F"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER_SCHEMA,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    },
}


def client_of(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oai(server: str) -> Iterator[openai.OpenAI]:
    with client_of(server) as client:
        yield client


def check_weather_args(arguments: str) -> None:
    """The arguments parse as JSON and match WEATHER_SCHEMA."""
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and len(args["city"]) <= 12
    assert args["unit"] in ("C", "F")


def test_chat_completion_and_usage(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=8)
    assert reply.object == "chat.completion" and reply.model == MODEL
    [choice] = reply.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_with_usage_and_stop(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 10
    # stop: a greedy count stops before "5".
    reply = oai.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 5"]
    )
    assert "5" not in reply.choices[0].text and reply.choices[0].finish_reason == "stop"


def test_seed_reproducible_and_n(oai: openai.OpenAI) -> None:
    texts = [
        oai.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1, seed=1234
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert texts[0] == texts[1]
    reply = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, n=2, seed=3)
    assert [c.index for c in reply.choices] == [0, 1]


def test_completion_streamed_and_logprobs(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=6, stream=True)
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    reply = oai.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=5, temperature=0, logprobs=3
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert "".join(lp.tokens) == choice.text
    assert all(lp_ <= 0 for lp_ in lp.token_logprobs if lp_ is not None)
    assert all(len(top) == 3 for top in lp.top_logprobs if top is not None)
    assert lp.text_offset is not None and lp.text_offset[0] == 0
    chat = oai.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=5, logprobs=True, top_logprobs=2, temperature=0
    )
    content = chat.choices[0].logprobs
    assert content is not None and content.content
    assert "".join(t.token for t in content.content) == chat.choices[0].message.content
    # Greedy without a grammar picks the likeliest token.
    assert all(t.top_logprobs[0].logprob == t.logprob for t in content.content)


def test_json_schema_output_parses_and_validates(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "details": {
                "type": "object",
                "properties": {
                    "color": {"enum": ["red", "green", "blue"]},
                    # No minimum/maximum: the grammar converter does not bound numbers.
                    "size": {"type": "integer"},
                },
                "required": ["color", "size"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "details"],
        "additionalProperties": False,
    }
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a fish as JSON."}],
        max_tokens=80,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "fish", "schema": schema, "strict": True},
        },
    )
    value: Any = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"name", "details"} and len(value["name"]) <= 16
    assert value["details"]["color"] in ("red", "green", "blue")
    assert isinstance(value["details"]["size"], int)


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_calls(oai: openai.OpenAI, stream: bool) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        args: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER, TIME],
            "tool_choice": choice,
            "max_tokens": 60,
            "temperature": 0,
        }
        if not stream:
            reply = oai.chat.completions.create(**args)
            message = reply.choices[0].message
            assert reply.choices[0].finish_reason == "tool_calls"
            calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        else:
            chunks = list(oai.chat.completions.create(**args, stream=True))
            found: dict[int, list[str]] = {}
            for chunk in chunks:
                for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    if delta.index not in found:
                        assert delta.id and delta.function and delta.function.name
                        found[delta.index] = [delta.function.name, ""]
                    found[delta.index][1] += (delta.function and delta.function.arguments) or ""
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
            calls = [(name, arguments) for name, arguments in found.values()]
        assert calls, "no tool call"
        for name, arguments in calls:
            if choice is named:
                assert name == "get_weather"
            if name == "get_weather":
                check_weather_args(arguments)
            else:
                assert name == "get_time" and json.loads(arguments) == {}


def _answer(oai: openai.OpenAI, stream: bool, **args: Any) -> tuple[str, list[str], str | None]:
    """(content, call names, finish_reason) of one chat answer, streamed or whole."""
    if not stream:
        choice = oai.chat.completions.create(**args).choices[0]
        names = [c.function.name for c in choice.message.tool_calls or []]
        return choice.message.content or "", names, choice.finish_reason
    content, names, finish = "", [], None
    for chunk in oai.chat.completions.create(**args, stream=True):
        for part in chunk.choices:
            content += part.delta.content or ""
            names += [
                d.function.name
                for d in part.delta.tool_calls or []
                if d.function and d.function.name
            ]
            finish = part.finish_reason or finish
    return content, names, finish


def test_forced_call_cut_by_max_tokens_is_the_same_text_both_ways(oai: openai.OpenAI) -> None:
    args: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 20,  # the grammar's call needs more: it is cut inside the arguments
        "temperature": 0,
    }
    whole = _answer(oai, False, **args)
    streamed = _answer(oai, True, **args)
    assert whole == streamed
    content, names, finish = whole
    assert names == [] and finish == "length"
    assert "get_weather" in content  # what the model wrote of the call


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_tool_schema_is_a_400(oai: openai.OpenAI, stream: bool) -> None:
    broken = {
        "type": "function",
        "function": {"name": "broken", "parameters": {"type": 5, "required": 5}},
    }
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER, broken],
            tool_choice="required",
            stream=stream,
        )
    assert caught.value.param == "tools"
    assert "tools[1].function.parameters.type must be" in caught.value.message
    assert "'broken'" in caught.value.message


def test_models(oai: openai.OpenAI) -> None:
    listed = {m.id: m.model_dump() for m in oai.models.list().data}
    assert MODEL in listed
    card = listed[MODEL]
    assert card["object"] == "model" and card["owned_by"]
    assert card["context_length"] > 0 and card["max_model_len"] == card["context_length"]
    assert oai.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_too_long_prompt_is_context_length_exceeded(small_server: ServerProcess) -> None:
    with client_of(small_server.base_url) as client:
        card = client.models.retrieve(MODEL).model_dump()
        assert card["context_length"] == 256
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt="word " * 400, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    body: Any = caught.value.body
    assert body["type"] == "invalid_request_error" and body["message"]


def test_models_answer_while_a_generation_streams(oai: openai.OpenAI, server: str) -> None:
    """Listing models never waits for the decode thread: it answers while a stream that
    started before it is still generating (the engine still counts it as active)."""
    stream = oai.completions.create(
        model="any", prompt="Once upon a time", max_tokens=400, stream=True, temperature=0
    )
    chunks = iter(stream)
    next(chunks)  # the generation is running
    listed = oai.models.list()
    with httpx.Client(base_url=server, timeout=30) as c:
        active = c.get("/system/info").json()["active_model"]["active_sequences"]
    assert "gemma-3-270m" in [m.id for m in listed.data]
    assert active == 1, "the listing came back only after the generation ended"
    last = list(chunks)[-1]
    assert last.choices[0].finish_reason == "length"
