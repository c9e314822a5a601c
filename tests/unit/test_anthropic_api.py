"""Anthropic's Messages API over the fake engine, driven by the official ``anthropic``
client and by raw HTTP where the wire itself is the point (event order, error bodies).

The client gets Litestar's TestClient (an httpx.Client) as its transport, so every request
goes through the whole app in-process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from fakes import FakeFactory
from helpers import REPO_ROOT, make_client, parse_sse
from litestar.testing import TestClient

from locallab_cpp.api.anthropic import render

BASE_URL = "http://testserver.local"
ASK = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object"}}
CALL = ['<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}\n</tool_call>']
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def through(http: TestClient[Any]) -> httpx2.Client:
    """An httpx2 client (the SDK's HTTP library) whose requests go to ``http``'s app."""

    def forward(request: httpx2.Request) -> httpx2.Response:
        got = http.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        # The test client has already decoded the body.
        headers = [(k, v) for k, v in got.headers.items() if k not in _DECODED]
        return httpx2.Response(got.status_code, headers=headers, content=got.content)

    return httpx2.Client(transport=httpx2.MockTransport(forward))


_DECODED = ("content-encoding", "content-length", "transfer-encoding")


def sdk_for(http: TestClient[Any], api_key: str = "sk-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=api_key, base_url=BASE_URL, http_client=through(http), max_retries=0
    )


@contextmanager
def clients(
    models_file: Path, factory: FakeFactory | None = None, **overrides: Any
) -> Iterator[tuple[anthropic.Anthropic, TestClient[Any], FakeFactory]]:
    factory = factory or FakeFactory()
    with make_client(models_file, factory, **overrides) as http:
        yield sdk_for(http), http, factory


@pytest.fixture
def sdk(models_file: Path) -> Iterator[anthropic.Anthropic]:
    with clients(models_file) as (client, _, _):
        yield client


def post(http: TestClient[Any], body: dict[str, Any], path: str = "/v1/messages") -> Any:
    return http.post(path, json=body, headers={"anthropic-version": "2023-06-01"})


def error_of(response: Any, status: int, error_type: str, *needles: str) -> str:
    """The response is ``status`` with Anthropic's error body; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def events_of(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """A stream's (event name, payload); each payload's type is its event's name."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for name, data in parse_sse(response.text):
        payload = json.loads(data)
        assert payload["type"] == name
        out.append((name, payload))
    return out


def without_pings(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, payload) for name, payload in events if name != "ping"]


# ----- whole messages --------------------------------------------------------------------


def test_message_shape(sdk: anthropic.Anthropic, models_file: Path) -> None:
    with clients(models_file) as (client, _, factory):
        reply = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=100, system="be brief", messages=ASK
        )
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.id.startswith("msg_")
    assert reply.model == "claude-sonnet-4-5"  # echoed, as Anthropic does
    [block] = reply.content
    assert block.type == "text" and block.text == "Echo: be brief hello there\nline two end"
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    [inp] = factory.last.seen
    assert reply.usage.input_tokens == len(inp.prompt_tokens)
    assert reply.usage.output_tokens == 4
    assert reply.usage.cache_read_input_tokens == 0
    assert reply.usage.cache_creation_input_tokens == 0
    assert inp.max_tokens == 100 and inp.sampling.temperature == 1.0
    assert factory.last.chat_calls[-1][0] == {"role": "system", "content": "be brief"}


def test_sampling_and_stop_sequences_reach_the_engine(models_file: Path) -> None:
    body = {
        "model": "x",
        "max_tokens": 50,
        "messages": ASK,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["there"],
    }
    with clients(models_file) as (_, http, factory):
        reply = post(http, body).json()
    [inp] = factory.last.seen
    assert (inp.sampling.temperature, inp.sampling.top_p, inp.sampling.top_k) == (0.2, 0.9, 5)
    assert "there" in inp.stop
    assert reply["stop_reason"] == "stop_sequence" and reply["stop_sequence"] == "there"


def test_max_tokens_reached_and_huge_max_tokens_accepted(models_file: Path) -> None:
    with clients(models_file) as (client, http, factory):
        short = client.messages.create(model="x", max_tokens=2, messages=ASK)
        # (The SDK itself refuses a huge max_tokens unless streamed.)
        huge = post(http, {"model": "x", "max_tokens": 2**31 - 1, "messages": ASK}).json()
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    assert huge["stop_reason"] == "end_turn"
    assert factory.last.seen[-1].max_tokens == 2**31 - 1  # the engine caps it at its context


def test_system_blocks_system_turns_and_consecutive_users(models_file: Path) -> None:
    with clients(models_file) as (client, _, factory):
        client.messages.create(
            model="x",
            max_tokens=10,
            system=[
                {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "two"},
            ],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}]},
                {"role": "system", "content": [{"type": "text", "text": "env"}]},  # type: ignore[typeddict-item]
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "b"},
                {"role": "user", "content": "c"},
            ],
        )
    assert factory.last.chat_calls[-1] == [
        {"role": "system", "content": "one\n\ntwo"},
        {"role": "user", "content": "a\n\nenv"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b\n\nc"},
    ]


def test_leading_system_turns_join_the_system_prompt(models_file: Path) -> None:
    with clients(models_file) as (_, http, factory):
        body = {
            "model": "x",
            "max_tokens": 10,
            "system": "top",
            "messages": [{"role": "system", "content": "more"}, *ASK],
        }
        assert post(http, body).status_code == 200
    assert factory.last.chat_calls[-1][0] == {"role": "system", "content": "top\n\nmore"}


def test_thinking_of_earlier_turns_is_reasoning_and_redacted_is_dropped(
    models_file: Path,
) -> None:
    with clients(models_file) as (client, _, factory):
        client.messages.create(
            model="x",
            max_tokens=2000,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[
                *ASK,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "text", "text": "hi"},
                    ],
                },
                {"role": "user", "content": "again"},
            ],
        )
    assistant = factory.last.chat_calls[-1][1]
    assert assistant == {"role": "assistant", "content": "hi", "reasoning_content": "hmm"}


def test_reasoning_is_a_thinking_block(models_file: Path) -> None:
    factory = FakeFactory(output=["<think>let me see</think>", "Hi"])
    with clients(models_file, factory) as (client, _, _):
        reply = client.messages.create(
            model="x", max_tokens=10, messages=ASK, thinking={"type": "disabled"}
        )
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "let me see"  # type: ignore[union-attr]
    assert reply.content[0].signature == ""  # type: ignore[union-attr]
    assert reply.content[1].text == "Hi"  # type: ignore[union-attr]


def test_accepted_and_ignored_fields(models_file: Path) -> None:
    body = json.loads((FIXTURES / "claude_code_request.json").read_text(encoding="utf-8"))
    extras = {
        "metadata": {"user_id": "u"},
        "service_tier": "auto",
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "output_config": {"effort": "high"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "some_future_field": {"a": 1},
        "container": "c",
    }
    with clients(models_file) as (_, http, _):
        response = http.post(
            "/v1/messages?beta=true",
            json={"model": "x", "max_tokens": 5, "messages": ASK, **extras},
            headers={"anthropic-version": "2099-01-01", "anthropic-beta": "whatever-2030"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert response.headers["request-id"].startswith("req_")
    assert body["model"] == "gemma-3-270m"  # the fixture is what the next test sends


def test_the_captured_claude_code_request_is_answered(models_file: Path) -> None:
    body = json.loads((FIXTURES / "claude_code_request.json").read_text(encoding="utf-8"))
    # Claude Code's first prompt is ~12k tokens of a real vocabulary; the fake's is smaller.
    with clients(models_file, FakeFactory(n_ctx=200_000)) as (_, http, factory):
        response = http.post("/v1/messages?beta=true", json=body)
    names = [name for name, _ in without_pings(events_of(response))]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert factory.last.chat_tools[-1] is not None
    assert len(factory.last.chat_tools[-1]) == len(body["tools"])
    assert factory.last.seen[-1].max_tokens == body["max_tokens"]


# ----- streaming -----------------------------------------------------------------------------


def test_stream_event_order(models_file: Path) -> None:
    with clients(models_file) as (_, http, factory):
        events = without_pings(
            events_of(post(http, {"model": "m", "max_tokens": 10, "messages": ASK, "stream": True}))
        )
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == "m"
    prompt = len(factory.last.seen[-1].prompt_tokens)
    assert start["usage"]["input_tokens"] == prompt
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta")
    assert text == "Echo: hello there\nline two end"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] == prompt


def test_sdk_stream_final_message_equals_the_whole_one(models_file: Path) -> None:
    factory = FakeFactory(output=["<think>so</think>", "Sure. ", *CALL])
    with clients(models_file, factory) as (client, _, _):
        args: dict[str, Any] = {"model": "x", "max_tokens": 50, "messages": ASK, "tools": [WEATHER]}
        whole = client.messages.create(**args)
        with client.messages.stream(**args) as stream:
            final = stream.get_final_message()
    for message in (whole, final):
        assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
        assert message.stop_reason == "tool_use"
        call = message.content[2]
        assert call.type == "tool_use" and call.name == "get_weather"
        assert call.input == {"city": "Paris"} and call.id.startswith("call_")
    assert final.content[1].text == whole.content[1].text  # type: ignore[union-attr]
    assert whole.content[1].text.strip() == "Sure."  # type: ignore[union-attr]
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_streamed_tool_use_and_thinking_blocks(models_file: Path) -> None:
    factory = FakeFactory(output=["<think>so</think>", "\n", *CALL])
    with clients(models_file, factory) as (_, http, _):
        body = {"model": "x", "max_tokens": 50, "messages": ASK, "tools": [WEATHER], "stream": True}
        events = without_pings(events_of(post(http, body)))
    names = [n for n, _ in events]
    starts = [p["content_block"] for n, p in events if n == "content_block_start"]
    assert [s["type"] for s in starts] == ["thinking", "tool_use"]  # whitespace text left out
    assert starts[1]["input"] == {} and starts[1]["name"] == "get_weather"
    deltas = [p["delta"] for n, p in events if n == "content_block_delta"]
    assert deltas[0] == {"type": "thinking_delta", "thinking": "so"}
    assert deltas[1] == {"type": "signature_delta", "signature": ""}
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_pings_while_the_prompt_is_computed(
    models_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "PING_EVERY_S", 0.01)
    gate = threading.Event()
    timer = threading.Timer(0.3, gate.set)
    with clients(models_file, FakeFactory(gate=gate)) as (_, http, _):
        timer.start()
        try:
            events = events_of(
                post(http, {"model": "x", "max_tokens": 5, "messages": ASK, "stream": True})
            )
        finally:
            timer.cancel()
            gate.set()
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[1] == "ping"
    assert names[-1] == "message_stop"


def test_an_error_after_the_stream_began_is_an_error_event(models_file: Path) -> None:
    with clients(models_file, FakeFactory(fail_after=1)) as (_, http, _):
        events = events_of(
            post(http, {"model": "x", "max_tokens": 9, "messages": ASK, "stream": True})
        )
    name, payload = events[-1]
    assert name == "error"
    assert payload["error"]["type"] == "api_error"
    assert "/home" not in payload["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]


# ----- tools -----------------------------------------------------------------------------


def test_tool_choice_any_tool_and_none(models_file: Path) -> None:
    factory = FakeFactory(output=CALL)
    with clients(models_file, factory) as (client, _, _):
        base: dict[str, Any] = {"model": "x", "max_tokens": 50, "messages": ASK}
        tools = [WEATHER, TIME]
        any_call = client.messages.create(**base, tools=tools, tool_choice={"type": "any"})
        named = client.messages.create(
            **base,
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        )
        none = client.messages.create(**base, tools=tools, tool_choice={"type": "none"})
    engine = factory.last
    any_inp, named_inp, none_inp = engine.seen
    assert any_inp.grammar is not None and named_inp.grammar is not None
    assert any_call.stop_reason == named.stop_reason == "tool_use"
    assert [t["function"]["name"] for t in engine.chat_tools[0] or ()] == [
        "get_weather",
        "get_time",
    ]
    assert engine.chat_tools[2] is None and none_inp.grammar is None
    assert none.stop_reason == "end_turn" and none.content[0].type == "text"


def test_tool_choice_of_an_unknown_tool_is_400(models_file: Path) -> None:
    with clients(models_file) as (_, http, _):
        body = {
            "model": "x",
            "max_tokens": 5,
            "messages": ASK,
            "tools": [WEATHER],
            "tool_choice": {"type": "tool", "name": "nope"},
        }
        error_of(post(http, body), 400, "invalid_request_error", "nope")


def test_server_tools_are_left_out(models_file: Path) -> None:
    with clients(models_file) as (_, http, factory):
        tools = [
            {"type": "web_search_20250305", "name": "web_search"},
            WEATHER,
            {"type": "bash_20250124", "name": "bash"},
        ]
        response = post(http, {"model": "x", "max_tokens": 5, "messages": ASK, "tools": tools})
    assert response.status_code == 200, response.text
    offered = factory.last.chat_tools[-1] or []
    assert [t["function"]["name"] for t in offered] == ["get_weather"]


def test_tool_results_reach_the_template(models_file: Path) -> None:
    with clients(models_file) as (client, _, factory):
        client.messages.create(
            model="x",
            max_tokens=10,
            tools=[WEATHER, TIME],
            messages=[
                *ASK,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "t2", "name": "get_time", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "no clock"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        )
    messages = factory.last.chat_calls[-1]
    assistant = messages[1]
    assert assistant["content"] == "Checking."
    assert [c["function"] for c in assistant["tool_calls"]] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {}},
    ]
    assert messages[2:] == [
        {"role": "tool", "content": "sunny", "tool_call_id": "t1", "name": "get_weather"},
        {"role": "tool", "content": "Error: no clock", "tool_call_id": "t2", "name": "get_time"},
        {"role": "user", "content": "thanks"},
    ]


# ----- count_tokens ----------------------------------------------------------------------


def test_count_tokens_matches_the_prompt(models_file: Path) -> None:
    with clients(models_file) as (client, _, factory):
        args: dict[str, Any] = {"model": "x", "messages": ASK, "system": "sys"}
        counted = client.messages.count_tokens(**args)
        with_tools = client.messages.count_tokens(**args, tools=[WEATHER])
        reply = client.messages.create(**args, max_tokens=5, tools=[WEATHER])
    assert counted.input_tokens > 0
    assert with_tools.input_tokens > counted.input_tokens
    assert reply.usage.input_tokens == with_tools.input_tokens
    assert len(factory.last.seen) == 1  # counting submits nothing


# ----- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "word"),
    [
        (
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
            },
            "image",
        ),
        (
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
            },
            "document",
        ),
    ],
)
def test_images_and_documents_are_400(models_file: Path, block: dict[str, Any], word: str) -> None:
    content = [{"type": "text", "text": "look"}, block]
    with clients(models_file) as (_, http, _):
        body = {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
        error_of(post(http, body), 400, "invalid_request_error", "vision is not supported", word)
        nested = [{"type": "tool_result", "tool_use_id": "t", "content": [block]}]
        body["messages"] = [{"role": "user", "content": nested}]
        error_of(post(http, body), 400, "invalid_request_error", "vision", "content[0].content[0]")


def test_sdk_raises_bad_request_for_an_image(sdk: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "http://example.invalid/a.png"}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="x", max_tokens=5, messages=[{"role": "user", "content": [image]}]
        )
    assert caught.value.status_code == 400
    assert "vision is not supported" in str(caught.value)


def test_validation_errors_are_anthropic_bodies(models_file: Path) -> None:
    with clients(models_file) as (_, http, _):
        error_of(
            post(http, {"model": "x", "messages": ASK}), 400, "invalid_request_error", "max_tokens"
        )
        error_of(
            post(http, {"model": "x", "max_tokens": 5, "messages": ASK, "temperature": 3}),
            400,
            "invalid_request_error",
            "temperature",
        )
        error_of(
            post(http, {"model": "x", "messages": []}, "/v1/messages/count_tokens"),
            400,
            "invalid_request_error",
        )


def test_unknown_paths_and_methods_are_anthropic_bodies(models_file: Path) -> None:
    with clients(models_file) as (_, http, _):
        error_of(http.post("/v1/messages/nope", json={}), 404, "not_found_error")
        error_of(http.get("/v1/messages"), 405, "invalid_request_error")
        # The OpenAI API keeps its own format under /v1.
        assert "error" in http.get("/v1/nope").json() and "type" not in http.get("/v1/nope").json()


def test_context_too_long_names_the_flag(models_file: Path) -> None:
    with clients(models_file) as (_, http, _):
        long = " ".join(f"w{i}" for i in range(200))
        body = {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": long}]}
        error_of(post(http, body), 400, "invalid_request_error", "--n-ctx")


def test_busy_is_529_overloaded_with_retry_after(models_file: Path) -> None:
    with clients(models_file, FakeFactory(queue_capacity=0, retry_after=3)) as (client, http, _):
        response = post(http, {"model": "x", "max_tokens": 5, "messages": ASK})
        error_of(response, 529, "overloaded_error")
        assert response.headers["retry-after"] == "3"
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model="x", max_tokens=5, messages=ASK)
    assert caught.value.status_code == 529


def test_body_too_large_is_request_too_large(models_file: Path) -> None:
    with clients(models_file, max_body_bytes=512) as (_, http, _):
        body = {
            "model": "x",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 2000}],
        }
        error_of(post(http, body), 413, "request_too_large")


def test_api_keys_bearer_and_x_api_key(models_file: Path) -> None:
    body = {"model": "x", "max_tokens": 5, "messages": ASK}
    with clients(models_file, api_keys=("k1",)) as (_, http, _):
        error_of(http.post("/v1/messages", json=body), 401, "authentication_error")
        assert http.post("/v1/messages", json=body, headers={"x-api-key": "k1"}).status_code == 200
        bearer = {"Authorization": "Bearer k1"}
        assert http.post("/v1/messages", json=body, headers=bearer).status_code == 200
        sdk = sdk_for(http, api_key="k1")
        assert sdk.messages.create(**body).type == "message"


def test_claude_model_names_and_aliases(models_file: Path) -> None:
    with clients(models_file, model_aliases=("claude-haiku-*=beta",)) as (client, _, factory):
        client.messages.create(model="claude-opus-4-1", max_tokens=5, messages=ASK)
        assert factory.last.spec.id == "alpha"  # an unknown name: the loaded model
        reply = client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=ASK)
    assert factory.last.spec.id == "beta" and reply.model == "claude-haiku-4-5"


def test_head_probes_answer_quickly(models_file: Path) -> None:
    with clients(models_file) as (_, http, _):
        assert http.head("/").status_code in (200, 404)
        assert http.head("/api/hello").status_code in (200, 404)
