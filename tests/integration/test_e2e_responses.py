"""OpenAI's Responses API on the real server, driven by the official ``openai`` client:
``responses.create`` and ``responses.stream`` with the embedded model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from it_support import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# Every event a streamed text answer sends, in OpenAI's order (deltas may repeat).
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def client_of(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def oai(server: str) -> Iterator[openai.OpenAI]:
    with client_of(server) as client:
        yield client


def test_text_response(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=24
    )
    assert reply.id.startswith("resp_") and reply.status in ("completed", "incomplete")
    assert reply.output_text.strip()
    usage = reply.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_stream_sends_every_event_in_order(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=16) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    # The SDK's get_final_response wants response.completed; a cut answer ends incomplete.
    last_event = events[-1]
    assert last_event.type in ("response.completed", "response.incomplete")
    final = last_event.response
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    last = "response.completed" if final.status == "completed" else "response.incomplete"
    assert collapsed == [*TEXT_EVENTS, last], kinds
    assert final.output_text.strip()


def test_function_call_round_trip(oai: openai.OpenAI) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = oai.responses.create(
        model=MODEL,
        input=[ask],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather", first.output
    call = calls[0]
    assert isinstance(json.loads(call.arguments)["city"], str)
    second = oai.responses.create(
        model=MODEL,
        input=[
            ask,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=30,
        temperature=0,
    )
    assert second.output_text.strip()


def test_custom_tool_call(oai: openai.OpenAI) -> None:
    tool = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files."}
    with oai.responses.stream(
        model=MODEL,
        input="Add a README file.",
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "custom", "name": "apply_patch"},
        max_output_tokens=80,
        temperature=0,
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    last_event = events[-1]
    assert last_event.type in ("response.completed", "response.incomplete")
    final = last_event.response
    calls = [item for item in final.output if item.type == "custom_tool_call"]
    if final.status == "completed":
        assert calls and calls[0].name == "apply_patch" and isinstance(calls[0].input, str)
        assert "response.custom_tool_call_input.done" in kinds
    else:  # cut by max_output_tokens: the call never completed, so none was made
        assert not calls


def test_json_schema_format_parses(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "size": {"type": "integer"}},
        "required": ["name", "size"],
        "additionalProperties": False,
    }
    reply = oai.responses.create(
        model=MODEL,
        input="Describe a fish as JSON.",
        text={"format": {"type": "json_schema", "name": "fish", "schema": schema, "strict": True}},
        max_output_tokens=60,
        temperature=0,
    )
    value: Any = json.loads(reply.output_text)
    assert set(value) == {"name", "size"} and isinstance(value["size"], int)


def test_store_and_previous_response_id_reuse_the_prompt(oai: openai.OpenAI) -> None:
    long_context = "Remember these facts. " + " ".join(f"Fact {i} is {i * 7}." for i in range(200))
    first = oai.responses.create(
        model=MODEL, input=long_context, store=True, max_output_tokens=16, temperature=0
    )
    assert first.usage is not None
    second = oai.responses.create(
        model=MODEL,
        input="What is fact 3?",
        previous_response_id=first.id,
        max_output_tokens=16,
        temperature=0,
    )
    assert second.usage is not None
    # The second turn computes only its new tokens: the first prompt is reused (a few
    # tokens at the boundary may be recomputed).
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached >= first.usage.input_tokens - 8, (cached, first.usage)
    assert oai.responses.retrieve(first.id).id == first.id
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model=MODEL, input="x", previous_response_id="resp_unknown")
    oai.responses.delete(first.id)


def test_context_error_is_a_failed_response(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory("--n-ctx", "256")
    with client_of(srv.base_url) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input="word " * 2000)
        assert caught.value.code == "context_length_exceeded"
        with client.responses.stream(model=MODEL, input="word " * 2000) as stream:
            events = list(stream)
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.failed",
        ]
        last = events[-1]
        assert last.type == "response.failed" and last.response.error is not None
        # Codex compacts its history on exactly this code.
        assert last.response.error.code == "context_length_exceeded"
