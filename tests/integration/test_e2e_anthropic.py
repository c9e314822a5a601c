"""Anthropic's Messages API end to end: the official ``anthropic`` client against the real
server and the embedded Gemma 3 270M base model.

A base model this small answers badly; these tests check shapes, counts, forced tool
calls, the stream and prompt reuse, never the quality of an answer.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-5"  # any Claude name means the loaded model
ASK = [{"role": "user", "content": "Say something about the sea."}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME = {
    "name": "get_time",
    "description": "The time now.",
    "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
}


def client_of(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def test_create_message(server: str) -> None:
    reply = client_of(server).messages.create(
        model=MODEL, max_tokens=8, system="You are terse.", messages=ASK
    )
    assert reply.id.startswith("msg_") and reply.model == MODEL
    assert reply.content and reply.content[0].type == "text"
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 0 < reply.usage.output_tokens <= 8
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > 10


def test_stream_final_message(server: str) -> None:
    with client_of(server).messages.stream(model=MODEL, max_tokens=8, messages=ASK) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "message_delta" in names
    assert final.content[0].type == "text"
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 8


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_tool_use_round_trip(server: str, choice: dict[str, Any]) -> None:
    client = client_of(server)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.messages.create(
        model=MODEL, max_tokens=64, messages=messages, tools=[WEATHER, TIME], tool_choice=choice
    )
    assert reply.stop_reason == "tool_use"
    calls = [block for block in reply.content if block.type == "tool_use"]
    assert calls, reply
    if choice["type"] == "tool":
        assert [c.name for c in calls] == ["get_weather"]
    for call in calls:
        assert call.name in ("get_weather", "get_time") and isinstance(call.input, dict)
        if call.name == "get_weather":
            assert isinstance(call.input["city"], str)  # type: ignore[index]
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c.id, "content": "Sunny, 21 C"}
                for c in calls
            ],
        },
    ]
    after = client.messages.create(
        model=MODEL, max_tokens=8, messages=messages, tools=[WEATHER, TIME]
    )
    assert after.content and after.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_count_tokens_matches_the_prompt(server: str) -> None:
    client = client_of(server)
    args: dict[str, Any] = {"model": MODEL, "messages": ASK, "tools": [WEATHER]}
    counted = client.messages.count_tokens(**args)
    reply = client.messages.create(**args, max_tokens=1)
    prompt = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == prompt
    assert client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens < prompt


def test_an_image_is_a_bad_request(server: str) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
             "data": "iVBORw0KGgo="}}  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as caught:
        client_of(server).messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": [image]}]
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "vision is not supported" in body["error"]["message"]


def test_an_agents_turns_reuse_the_prompt(server: str) -> None:
    """Four turns of an agent: each resends the conversation with the last answer as
    content blocks and its tool results; each turn computes only what is new."""
    client = client_of(server)
    system = "You are a weather assistant. Use the tools. " * 20
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris, please."}]
    prompts: list[int] = []
    cached: list[int] = []
    for turn in range(4):
        reply = client.messages.create(
            model=MODEL,
            max_tokens=48,
            system=system,
            messages=messages,
            tools=[WEATHER, TIME],
            tool_choice={"type": "any"},
        )
        usage = reply.usage
        prompts.append(usage.input_tokens + (usage.cache_read_input_tokens or 0))
        cached.append(usage.cache_read_input_tokens or 0)
        calls = [block for block in reply.content if block.type == "tool_use"]
        assert reply.stop_reason == "tool_use" and calls, reply
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": c.id, "content": f"result {turn}"}
                    for c in calls
                ],
            },
        ]
    for k in range(1, 4):
        assert prompts[k] > prompts[k - 1], prompts
        # The previous turn's whole prompt is reused (a few tokens where the turns meet
        # may be recomputed).
        assert cached[k] >= prompts[k - 1] - 8, (prompts, cached)
    assert cached[3] > cached[1] > 0, cached
