"""The Anthropic Messages API's wire types: what Claude Code really sends decodes, hand-written
requests of every block shape decode, bounds and unknown block types are 400-worthy
validation errors that name the field, and responses and stream events encode as Anthropic's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from locallab_cpp.api.anthropic.protocol import (
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    ThinkingAdaptive,
    ThinkingEnabled,
    ToolAdditionBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    request_problem,
)
from locallab_cpp.api.anthropic.responses import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    ErrorBody,
    ErrorDetail,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageDeltaBody,
    MessageDeltaUsage,
    MessageStart,
    MessageStop,
    Ping,
    SignatureDelta,
    TextContent,
    TextDelta,
    ThinkingContent,
    ThinkingDelta,
    ToolUseContent,
    Usage,
    sse_event,
)
from locallab_cpp.errors import describe_msgspec_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASE: dict[str, Any] = {
    "model": "gemma-3-270m",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hello"}],
}


def decode(body: dict[str, Any], type_: type[Any] = MessagesRequest) -> Any:
    return msgspec.json.decode(json.dumps(body).encode(), type=type_)


def problem(body: dict[str, Any], type_: type[Any] = MessagesRequest) -> str:
    """The 400 message the strict body validation would give (http/validation.py)."""
    with pytest.raises(msgspec.ValidationError) as info:
        decode(body, type_)
    return describe_msgspec_error(str(info.value))


# ----- what Claude Code sends --------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["claude_code_request.json", "claude_code_request_claude_model.json"]
)
def test_claude_code_requests_decode(fixture: str) -> None:
    body = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    request = decode(body)
    assert isinstance(request, MessagesRequest)
    assert request.stream is True
    assert request.max_tokens == 32000
    assert request.metadata is not None and request.metadata.user_id
    assert request.context_management == {
        "edits": [{"type": "clear_thinking_20251015", "keep": "all"}]
    }
    # The system prompt: three text blocks, the last two with cache breakpoints.
    blocks = request.system_blocks()
    assert len(blocks) == 3 and all(isinstance(b, TextBlock) for b in blocks)
    assert blocks[0].text.startswith("x-anthropic-billing-header:")
    assert blocks[-1].cache_control is not None and blocks[-1].cache_control.type == "ephemeral"
    assert "Claude agent" in request.system_text()
    # The tools: client tools with schemas, one deferred-loading placeholder.
    assert request.tools is not None and len(request.tools) == 12
    names = {t.name for t in request.tools}
    assert {"Bash", "Read", "Edit", "Write", "ToolSearch"} <= names
    assert all(t.input_schema is not None and not t.is_server_tool for t in request.tools)
    assert any(t.defer_loading for t in request.tools)
    assert request.messages[0].role == "user"
    assert request_problem(request) is None
    # count_tokens takes the same body (its extra fields are ignored).
    assert isinstance(decode(body, CountTokensRequest), CountTokensRequest)


def test_claude_code_with_an_unknown_model_sends_adaptive_thinking_and_a_system_turn() -> None:
    body = json.loads((FIXTURES / "claude_code_request.json").read_text(encoding="utf-8"))
    request = decode(body)
    assert request.model == "gemma-3-270m"
    assert isinstance(request.thinking, ThinkingAdaptive)
    assert request.thinking.display == "omitted"
    assert request.output_config is not None and request.output_config.effort == "high"
    roles = [m.role for m in request.messages]
    assert roles == ["user", "system"]
    assert "Say hello" in [b.text for b in request.messages[0].blocks() if isinstance(b, TextBlock)]


def test_claude_code_with_a_claude_model_sends_a_thinking_budget() -> None:
    body = json.loads(
        (FIXTURES / "claude_code_request_claude_model.json").read_text(encoding="utf-8")
    )
    request = decode(body)
    assert isinstance(request.thinking, ThinkingEnabled)
    assert request.thinking.budget_tokens == 31999 < request.max_tokens


# ----- hand-written requests ---------------------------------------------------------------


def test_minimal_request_and_string_system() -> None:
    request = decode({**BASE, "system": "Be brief."})
    assert request.system_blocks() == [TextBlock(text="Be brief.")]
    assert request.system_text() == "Be brief."
    assert request.messages[0].blocks() == [TextBlock(text="Hello")]
    assert decode(BASE).system_blocks() == []


def test_system_blocks_with_cache_control() -> None:
    request = decode(
        {
            **BASE,
            "system": [
                {"type": "text", "text": "One."},
                {
                    "type": "text",
                    "text": "Two.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
            ],
        }
    )
    assert request.system_text() == "One.\n\nTwo."
    assert request.system[1].cache_control.ttl == "1h"


def test_a_tool_conversation() -> None:
    request = decode(
        {
            **BASE,
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                {"type": "bash_20250124", "name": "bash"},
            ],
            "tool_choice": {
                "type": "tool",
                "name": "get_weather",
                "disable_parallel_tool_use": True,
            },
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "text", "text": "Looking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_2",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "service down"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "AA==",
                                    },
                                },
                            ],
                        },
                        {"type": "tool_result", "tool_use_id": "toolu_3"},
                    ],
                },
            ],
        }
    )
    assert [t.is_server_tool for t in request.tools] == [False, True, True]
    assert request.tools[1].input_schema is None
    assert request.tool_choice == ToolChoiceTool(name="get_weather", disable_parallel_tool_use=True)
    calls = [b for b in request.messages[1].blocks() if isinstance(b, ToolUseBlock)]
    assert [c.input for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    first, second, third = request.messages[2].blocks()
    assert isinstance(first, ToolResultBlock) and first.content == "18 C" and first.is_error is None
    assert isinstance(second, ToolResultBlock) and second.is_error is True
    assert isinstance(second.content, list) and isinstance(second.content[1], ImageBlock)
    assert second.content[1].source.media_type == "image/png"
    assert isinstance(third, ToolResultBlock) and third.content is None
    assert request_problem(request) is None


def test_claude_code_tool_reference_and_tool_change_blocks() -> None:
    request = decode(
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "tool_reference", "tool_name": "WebFetch"}],
                        }
                    ],
                },
                {
                    "role": "system",
                    "content": [
                        {"type": "tool_addition", "tool": {"type": "tool_reference", "name": "X"}},
                        {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "Y"}},
                    ],
                },
            ],
        }
    )
    result = request.messages[0].blocks()[0]
    assert isinstance(result, ToolResultBlock) and isinstance(result.content, list)
    assert result.content[0] == ToolReferenceBlock(tool_name="WebFetch")
    assert isinstance(request.messages[1].blocks()[0], ToolAdditionBlock)


def test_documents_and_urls() -> None:
    request = decode(
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.png"},
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "Doc."},
                            "title": "T",
                            "citations": {"enabled": True},
                        },
                    ],
                }
            ],
        }
    )
    image, document = request.messages[0].blocks()
    assert image.source.url == "https://example.com/a.png"
    assert document.source.data == "Doc." and document.title == "T"


def test_null_and_unknown_fields_are_accepted() -> None:
    nulls = dict.fromkeys(
        [
            "system",
            "tools",
            "tool_choice",
            "thinking",
            "context_management",
            "output_config",
            "mcp_servers",
            "stop_sequences",
            "temperature",
            "top_p",
            "top_k",
            "stream",
            "metadata",
            "service_tier",
            "container",
        ]
    )
    request = decode({**BASE, **nulls, "inference_geo": "us", "speed": "fast", "betas": ["x"]})
    assert request.system is None and request.stream is None and request.thinking is None
    unknown_inside = decode(
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hi", "cache_control": None, "new_field": 1}
                    ],
                    "name": "ignored",
                }
            ],
            "tool_choice": {"type": "any", "future": True},
            "metadata": {"user_id": None, "other": 1},
        }
    )
    assert unknown_inside.tool_choice == ToolChoiceAny()
    assert decode({**BASE, "tool_choice": {"type": "none"}}).tool_choice == ToolChoiceNone()
    assert decode({**BASE, "thinking": {"type": "disabled"}}).thinking is not None


def test_count_tokens_needs_no_max_tokens() -> None:
    body = {k: v for k, v in BASE.items() if k != "max_tokens"}
    assert isinstance(decode(body, CountTokensRequest), CountTokensRequest)
    assert problem(body) == "request body: Object missing required field `max_tokens`"


# ----- what is refused, and how it is said -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": 0}, "'max_tokens': Expected `int` >= 1"),
        ({"max_tokens": "64"}, "'max_tokens': Expected `int`, got `str`"),
        ({"temperature": 1.5}, "'temperature': Expected `float` <= 1.0"),
        ({"temperature": -0.1}, "'temperature': Expected `float` >= 0.0"),
        ({"top_p": 2}, "'top_p': Expected `float` <= 1.0"),
        ({"top_k": -1}, "'top_k': Expected `int` >= 0"),
        ({"messages": []}, "'messages': Expected `array` of length >= 1"),
        ({"model": ""}, "'model': Expected `str` of length >= 1"),
        ({"stop_sequences": [""]}, "'stop_sequences[0]': Expected `str` of length >= 1"),
        ({"stop_sequences": ["x"] * 17}, "'stop_sequences': Expected `array` of length <= 16"),
        (
            {"thinking": {"type": "enabled"}},
            "'thinking': Object missing required field `budget_tokens`",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1000}},
            "'thinking.budget_tokens': Expected `int` >= 1024",
        ),
        ({"thinking": {"type": "sometimes"}}, "'thinking.type': Invalid value 'sometimes'"),
        ({"tool_choice": {"type": "tool"}}, "'tool_choice': Object missing required field `name`"),
        ({"tool_choice": {"type": "required"}}, "'tool_choice.type': Invalid value 'required'"),
        (
            {"tools": [{"description": "no name"}]},
            "'tools[0]': Object missing required field `name`",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "'messages[0].role': Invalid enum value 'tool'",
        ),
    ],
)
def test_bounds_and_shapes(change: dict[str, Any], message: str) -> None:
    assert problem({**BASE, **change}).startswith(message)


def test_unknown_block_types_are_named() -> None:
    body = {
        **BASE,
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}],
            },
        ],
    }
    assert problem(body) == "'messages[1].content[0].type': Invalid value 'server_tool_use'"
    nested = {
        **BASE,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]}
                ],
            }
        ],
    }
    assert problem(nested) == "'messages[0].content[0].content[0].type': Invalid value 'video'"
    assert problem({**BASE, "system": [{"type": "image", "source": {}}]}) == (
        "'system[0].type': Invalid value 'image'"
    )
    untyped = {**BASE, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}
    assert "missing required field `type`" in problem(untyped)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tools": [{"name": "f"}]}, "'tools[0].input_schema': required for the client tool 'f'"),
        (
            {"tools": [{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}]},
            "'tools[1].name': the tool name 'f' is used twice",
        ),
        (
            {
                "tools": [{"name": "f", "input_schema": {}}],
                "tool_choice": {"type": "tool", "name": "g"},
            },
            "'tool_choice.name': 'g' is not one of the request's tools",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
            "'thinking.budget_tokens': must be less than max_tokens",
        ),
    ],
)
def test_cross_field_problems(change: dict[str, Any], message: str) -> None:
    assert request_problem(decode({**BASE, **change})) == message


# ----- responses and events ----------------------------------------------------------------


def test_message_encodes_as_anthropic_s() -> None:
    message = Message(
        id="msg_1",
        model="gemma-3-270m",
        content=[
            ThinkingContent(thinking="Hm."),
            TextContent(text="Hi"),
            ToolUseContent(id="toolu_1", name="f", input={"a": 1}),
        ],
        stop_reason="tool_use",
        usage=Usage(input_tokens=5, output_tokens=7),
    )
    assert json.loads(msgspec.json.encode(message)) == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "gemma-3-270m",
        "content": [
            {"type": "thinking", "thinking": "Hm.", "signature": ""},
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def parse_sse(raw: bytes) -> tuple[str, dict[str, Any]]:
    text = raw.decode()
    assert text.endswith("\n\n") and text.count("\n") == 3
    event_line, data_line, _, _ = text.split("\n")
    assert event_line.startswith("event: ") and data_line.startswith("data: ")
    data = json.loads(data_line.removeprefix("data: "))
    assert data["type"] == event_line.removeprefix("event: ")
    return data["type"], data


def test_stream_events() -> None:
    start = Message(id="msg_1", model="m", content=[], usage=Usage(input_tokens=3, output_tokens=0))
    events = [
        MessageStart(message=start),
        ContentBlockStart(index=0, content_block=TextContent(text="")),
        Ping(),
        ContentBlockDelta(index=0, delta=TextDelta(text="hel")),
        ContentBlockStop(index=0),
        ContentBlockStart(index=1, content_block=ThinkingContent(thinking="")),
        ContentBlockDelta(index=1, delta=ThinkingDelta(thinking="so")),
        ContentBlockDelta(index=1, delta=SignatureDelta(signature="")),
        ContentBlockStop(index=1),
        ContentBlockStart(index=2, content_block=ToolUseContent(id="toolu_1", name="f", input={})),
        ContentBlockDelta(index=2, delta=InputJsonDelta(partial_json='{"a": ')),
        ContentBlockStop(index=2),
        MessageDelta(
            delta=MessageDeltaBody(stop_reason="tool_use"),
            usage=MessageDeltaUsage(output_tokens=9),
        ),
        MessageStop(),
    ]
    parsed = [parse_sse(sse_event(e)) for e in events]
    names = [name for name, _ in parsed]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    data = dict(parsed)
    assert data["message_start"]["message"]["content"] == []
    assert data["message_start"]["message"]["stop_reason"] is None
    assert parsed[1][1]["content_block"] == {"type": "text", "text": ""}
    assert parsed[3][1]["delta"] == {"type": "text_delta", "text": "hel"}
    assert parsed[9][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "f",
        "input": {},
    }
    assert parsed[10][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": '}
    assert data["message_delta"] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }
    assert data["ping"] == {"type": "ping"}


def test_error_event_and_body() -> None:
    raw = sse_event(ErrorBody(error=ErrorDetail(type="overloaded_error", message="Busy")))
    assert parse_sse(raw) == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}},
    )
