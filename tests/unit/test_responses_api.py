"""OpenAI's Responses API (/v1/responses) over the fake engine, driven by the official
``openai`` client and by raw HTTP where the shape itself is the point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes import FakeFactory
from helpers import REPO_ROOT, make_client, parse_sse
from litestar.testing import TestClient

BASE_URL = "http://testserver.local/v1"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
WEATHER_CALL = [
    '<tool_call>\n{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}\n</tool_call>',
]
PATCH_CALL = [
    '<tool_call>\n{"name": "apply_patch", "arguments": {"input": "*** Begin Patch\\n',
    '*** End Patch"}}\n</tool_call>',
]


@contextmanager
def clients(
    models_file: Path, factory: FakeFactory | None = None, **overrides: Any
) -> Iterator[tuple[openai.OpenAI, TestClient[Any], FakeFactory]]:
    factory = factory or FakeFactory(n_ctx=4096)
    with make_client(models_file, factory, **overrides) as http:
        oai = openai.OpenAI(api_key="x", base_url=BASE_URL, http_client=http, max_retries=0)
        yield oai, http, factory


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, payload) of a Responses stream; every name matches the payload's type
    and the sequence numbers count from 0."""
    events = [(name, json.loads(data)) for name, data in parse_sse(body)]
    for n, (name, payload) in enumerate(events):
        assert payload["type"] == name and payload["sequence_number"] == n
    return events


def test_text_response(models_file: Path) -> None:
    with clients(models_file) as (oai, _, factory):
        reply = oai.responses.create(model="alpha", input="hello there", instructions="Be brief.")
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.status == "completed" and reply.error is None
    [message] = reply.output
    assert message.type == "message" and message.role == "assistant"
    assert reply.output_text.startswith("Echo:") and "hello there" in reply.output_text
    usage = reply.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens == 4
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    sent = factory.last.chat_calls[-1]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1] == {"role": "user", "content": "hello there"}


def test_message_items_and_roles(models_file: Path) -> None:
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "d"}]},
        {"role": "user", "content": "q1"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "a1"}],
        },
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "q"}, {"type": "input_text", "text": "2"}],
        },
    ]
    with clients(models_file) as (oai, _, factory):
        oai.responses.create(model="alpha", input=items)  # type: ignore[arg-type]
    sent = factory.last.chat_calls[-1]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "system", "user"]
    assert sent[2]["content"] == "a1" and sent[2]["reasoning_content"] == "thought"
    assert sent[4]["content"] == "q2"


def test_image_input_is_refused(models_file: Path) -> None:
    part = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    with clients(models_file) as (oai, _, _f), pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="alpha", input=[{"role": "user", "content": [part]}])  # type: ignore[list-item]
    assert "input_image" in str(err.value) and "images" in str(err.value)


def test_function_call_round_trip(models_file: Path) -> None:
    with clients(models_file, FakeFactory(n_ctx=4096, output=WEATHER_CALL)) as (oai, _, factory):
        reply = oai.responses.create(model="alpha", input="weather?", tools=[WEATHER])  # type: ignore[list-item]
        [call] = reply.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id
        factory.last.output = ["It is sunny."]
        follow = [
            {"role": "user", "content": "weather?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "get_weather",
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ]
        second = oai.responses.create(model="alpha", input=follow, tools=[WEATHER])  # type: ignore[arg-type]
    assert second.output_text == "It is sunny."
    sent = factory.last.chat_calls[-1]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": call.call_id,
        "name": "get_weather",
    }


def test_custom_tool_call(models_file: Path) -> None:
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files."}
    with clients(models_file, FakeFactory(n_ctx=4096, output=PATCH_CALL)) as (oai, _, factory):
        reply = oai.responses.create(model="alpha", input="fix it", tools=[tool])  # type: ignore[list-item]
        [call] = reply.output
        assert call.type == "custom_tool_call" and call.name == "apply_patch"
        assert call.input == "*** Begin Patch\n*** End Patch"
        offered = factory.last.chat_tools[-1]
        assert offered is not None
        assert offered[0]["function"]["parameters"]["required"] == ["input"]
        factory.last.output = ["Done."]
        follow = [
            {
                "type": "custom_tool_call",
                "call_id": call.call_id,
                "name": "apply_patch",
                "input": call.input,
            },
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "applied"},
        ]
        oai.responses.create(model="alpha", input=follow, tools=[tool])  # type: ignore[arg-type]
    sent = factory.last.chat_calls[-1]
    args = sent[0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"input": "*** Begin Patch\n*** End Patch"}
    assert sent[1]["role"] == "tool" and sent[1]["content"] == "applied"


def test_namespace_tools_and_builtins(
    models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = {
        "type": "namespace",
        "name": "crm",
        "description": "The CRM.",
        "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER["parameters"]}],
    }
    output = [
        '<tool_call>\n{"name": "crm__get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    ]
    tools = [namespace, {"type": "web_search"}, {"type": "local_shell"}]
    with clients(models_file, FakeFactory(n_ctx=4096, output=output)) as (_, http, factory):
        body = http.post("/v1/responses", json={"model": "a", "input": "x", "tools": tools})
    assert body.status_code == 200, body.text
    [call] = body.json()["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["namespace"] == "crm"
    offered = factory.last.chat_tools[-1]
    assert offered is not None and [t["function"]["name"] for t in offered] == ["crm__get_weather"]
    assert "'web_search' left out" in capsys.readouterr().err


def test_streamed_text_events_in_order(models_file: Path) -> None:
    output = ["<think>", "hmm", "</think>", "Hello", " world"]
    with clients(models_file, FakeFactory(n_ctx=4096, output=output)) as (_, http, _f):
        body = http.post("/v1/responses", json={"model": "a", "input": "x", "stream": True})
    assert body.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in sse_events(body.text)]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    reasoning = names.index("response.reasoning_text.delta")
    text = names.index("response.output_text.delta")
    assert names[2:reasoning] == ["response.output_item.added", "response.content_part.added"]
    assert names[reasoning + 1 : text - 2] == [
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert names[text + 2 :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_stream_with_the_sdk_matches_the_whole(models_file: Path) -> None:
    with clients(
        models_file, FakeFactory(n_ctx=4096, output=["<think>", "hmm", "</think>", "Hi", "!"])
    ) as (oai, _, _f):
        whole = oai.responses.create(model="alpha", input="x")
        with oai.responses.stream(model="alpha", input="x") as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
    assert final.output_text == whole.output_text == "Hi!"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    reasoning = final.output[0]
    assert (
        reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text == "hmm"
    )
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens >= 1
    assert "response.reasoning_text.delta" in kinds


def test_streamed_calls(models_file: Path) -> None:
    tools = [WEATHER, {"type": "custom", "name": "apply_patch"}]
    for output, kind, field in (
        (WEATHER_CALL, "function_call_arguments", "arguments"),
        (PATCH_CALL, "custom_tool_call_input", "input"),
    ):
        with clients(models_file, FakeFactory(n_ctx=4096, output=output)) as (oai, http, _f):
            body = http.post(
                "/v1/responses", json={"model": "a", "input": "x", "tools": tools, "stream": True}
            )
            events = sse_events(body.text)
            names = [name for name, _ in events]
            assert names[2:] == [
                "response.output_item.added",
                f"response.{kind}.delta",
                f"response.{kind}.done",
                "response.output_item.done",
                "response.completed",
            ]
            added, done = events[2][1]["item"], events[5][1]["item"]
            assert added["status"] == "in_progress" and added[field] == ""
            assert done[field] == events[4][1][field] == events[3][1]["delta"]
            with oai.responses.stream(model="a", input="x", tools=tools) as stream:  # type: ignore[arg-type]
                final = stream.get_final_response()
            assert getattr(final.output[0], field) == done[field]


def test_max_output_tokens_is_incomplete(models_file: Path) -> None:
    with clients(models_file) as (oai, http, _f):
        reply = oai.responses.create(model="a", input="x", max_output_tokens=2)
        assert reply.status == "incomplete"
        assert reply.incomplete_details is not None
        assert reply.incomplete_details.reason == "max_output_tokens"
        body = http.post(
            "/v1/responses", json={"input": "x", "max_output_tokens": 2, "stream": True}
        )
    assert sse_events(body.text)[-1][0] == "response.incomplete"


def test_json_schema_format_sets_a_grammar(models_file: Path) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    with clients(models_file) as (oai, _, factory):
        oai.responses.create(model="a", input="x", text={"format": fmt})  # type: ignore[typeddict-item]
        grammar = factory.last.seen[-1].grammar
        assert grammar is not None and "root" in grammar
        oai.responses.create(model="a", input="x", text={"format": {"type": "json_object"}})
        assert factory.last.seen[-1].grammar


def test_accepted_fields(models_file: Path) -> None:
    body = {
        "model": "gpt-5",
        "input": "x",
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["line two"],
        "reasoning": {"effort": "high", "summary": "auto"},
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "metadata": {"k": "v"},
        "user": "u",
        "prompt_cache_key": "key",
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "service_tier": "auto",
        "store": False,
        "client_metadata": {"unknown": "ignored"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
    }
    with clients(models_file) as (_, http, factory):
        reply = http.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    seen = factory.last.seen[-1]
    assert seen.sampling.temperature == 0.2 and seen.sampling.top_p == 0.9
    assert "line two" in seen.stop
    assert reply.json()["metadata"] == {"k": "v"}


def test_tool_choice_forms(models_file: Path) -> None:
    with clients(models_file, FakeFactory(n_ctx=4096, output=WEATHER_CALL)) as (_, http, factory):
        for choice in ("required", {"type": "function", "name": "get_weather"}):
            reply = http.post(
                "/v1/responses", json={"input": "x", "tools": [WEATHER], "tool_choice": choice}
            )
            assert reply.status_code == 200, reply.text
            assert factory.last.seen[-1].grammar  # a forced call has a grammar
        bad = http.post(
            "/v1/responses",
            json={
                "input": "x",
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "name": "nope"},
            },
        )
    assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]


def test_context_error(models_file: Path) -> None:
    with clients(models_file, FakeFactory(n_ctx=16)) as (oai, http, _f):
        with pytest.raises(openai.BadRequestError) as err:
            oai.responses.create(model="a", input="word " * 100)
        assert err.value.code == "context_length_exceeded"
        body = http.post("/v1/responses", json={"input": "word " * 100, "stream": True})
    events = sse_events(body.text)
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "context_length_exceeded"


def test_codex_request_fixture_is_read(models_file: Path) -> None:
    """The captured Codex request parses and is answered: its namespace tool's functions
    are offered under their joined names."""
    request = json.loads((REPO_ROOT / "tests/fixtures/codex_request.json").read_text())
    request["stream"] = False
    with clients(models_file, FakeFactory(n_ctx=100_000)) as (_, http, factory):
        reply = http.post("/v1/responses", json=request)
    assert reply.status_code == 200, reply.text
    offered = factory.last.chat_tools[-1]
    assert offered is not None
    assert "multi_agent_v1__spawn_agent" in [t["function"]["name"] for t in offered]


def test_store_and_previous_response_id(models_file: Path) -> None:
    with clients(models_file) as (oai, http, factory):
        first = oai.responses.create(model="a", input="one", store=True, instructions="sys")
        second = oai.responses.create(model="a", input="two", previous_response_id=first.id)
        sent = factory.last.chat_calls[-1]
        # the earlier input and answer, then the new input; earlier instructions are not kept
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert sent[1]["content"] == first.output_text
        assert oai.responses.retrieve(first.id).output_text == first.output_text
        with pytest.raises(openai.NotFoundError):
            oai.responses.retrieve(second.id)  # not stored
        with pytest.raises(openai.NotFoundError) as err:
            oai.responses.create(model="a", input="x", previous_response_id="resp_nope")
        assert "resp_nope" in str(err.value)
        ref = http.post(
            "/v1/responses",
            json={"input": [{"type": "item_reference", "id": first.output[0].id}]},
        )
        assert ref.status_code == 200, ref.text
        assert factory.last.chat_calls[-1][0]["role"] == "assistant"
        oai.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            oai.responses.retrieve(first.id)
        missing = http.delete(f"/v1/responses/{first.id}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_store_is_bounded(models_file: Path) -> None:
    with clients(models_file, responses_store=2) as (oai, _, _f):
        ids = [oai.responses.create(model="a", input="x", store=True).id for _ in range(3)]
        with pytest.raises(openai.NotFoundError):
            oai.responses.retrieve(ids[0])
        assert oai.responses.retrieve(ids[2]).id == ids[2]


def test_streamed_store(models_file: Path) -> None:
    with clients(models_file) as (oai, _, factory):
        with oai.responses.stream(model="a", input="one", store=True) as stream:
            final = stream.get_final_response()
        oai.responses.create(model="a", input="two", previous_response_id=final.id)
    assert factory.last.chat_calls[-1][1]["content"] == final.output_text
