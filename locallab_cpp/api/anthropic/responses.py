"""Response bodies of Anthropic's Messages API and its streaming events, as msgspec Structs.

A whole answer is a :class:`Message`. A streamed one is a sequence of server-sent events,
each named by its payload's ``type`` (:func:`sse_event` writes one)::

    message_start            the message with empty content and the input usage
    content_block_start      per block, at its index: text "", thinking "", tool_use input {}
    content_block_delta      text_delta, thinking_delta, input_json_delta, signature_delta
    content_block_stop
    message_delta            stop_reason, stop_sequence and the output usage
    message_stop

``ping`` may come between any two, and ``error`` ends a stream that failed after it began
(its payload is also the body of every error response: :class:`ErrorBody`).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from locallab_cpp.http.sse import data_event

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


class Usage(msgspec.Struct, kw_only=True):
    """A message's token counts. Prompt caching is llama.cpp's own (reused slot prefixes), so
    the cache fields are 0 unless the server reports the reused prefix as a cache read."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


# ----- content blocks of a response --------------------------------------------------------


class _Content(msgspec.Struct, kw_only=True, tag_field="type"):
    """A block of the assistant's content; ``type`` is the tag."""


class TextContent(_Content, tag="text"):
    text: str


class ThinkingContent(_Content, tag="thinking"):
    """The model's reasoning. ``signature`` is Anthropic's proof that the text is unchanged;
    this server has no key to sign with and sends an empty string."""

    thinking: str
    signature: str = ""


class RedactedThinkingContent(_Content, tag="redacted_thinking"):
    data: str


class ToolUseContent(_Content, tag="tool_use"):
    """A tool call: ``input`` is the arguments object (``{}`` in content_block_start)."""

    id: str
    name: str
    input: dict[str, object]


ResponseContent = TextContent | ThinkingContent | RedactedThinkingContent | ToolUseContent


class Message(msgspec.Struct, kw_only=True, tag="message", tag_field="type"):
    """The answer of ``POST /v1/messages`` (and, with empty content and no stop reason,
    the payload of ``message_start``)."""

    id: str
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ResponseContent]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class CountTokensResponse(msgspec.Struct, kw_only=True):
    """The answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int


class ErrorDetail(msgspec.Struct, kw_only=True):
    """``type`` is one of Anthropic's error types: ``invalid_request_error`` (400),
    ``authentication_error`` (401), ``permission_error`` (403), ``not_found_error`` (404),
    ``request_too_large`` (413), ``rate_limit_error`` (429), ``api_error`` (500),
    ``overloaded_error`` (529: the server is busy, retry after the Retry-After seconds)."""

    type: str
    message: str


# ----- streaming events --------------------------------------------------------------------


class _Event(msgspec.Struct, kw_only=True, tag_field="type"):
    """A streaming event's payload; its ``type`` (the tag) is also the SSE event name."""


class MessageStart(_Event, tag="message_start"):
    message: Message


class ContentBlockStart(_Event, tag="content_block_start"):
    index: int
    content_block: ResponseContent


class _Delta(msgspec.Struct, kw_only=True, tag_field="type"):
    """The ``delta`` of a content_block_delta; ``type`` is the tag."""


class TextDelta(_Delta, tag="text_delta"):
    text: str


class ThinkingDelta(_Delta, tag="thinking_delta"):
    thinking: str


class InputJsonDelta(_Delta, tag="input_json_delta"):
    """A piece of a tool call's arguments, as JSON text; the pieces joined parse."""

    partial_json: str


class SignatureDelta(_Delta, tag="signature_delta"):
    signature: str


Delta = TextDelta | ThinkingDelta | InputJsonDelta | SignatureDelta


class ContentBlockDelta(_Event, tag="content_block_delta"):
    index: int
    delta: Delta


class ContentBlockStop(_Event, tag="content_block_stop"):
    index: int


class MessageDeltaBody(msgspec.Struct, kw_only=True):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDeltaUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The usage of a message_delta: ``output_tokens`` (cumulative); the input counts are
    repeated only where known."""

    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageDelta(_Event, tag="message_delta"):
    delta: MessageDeltaBody
    usage: MessageDeltaUsage


class MessageStop(_Event, tag="message_stop"):
    pass


class Ping(_Event, tag="ping"):
    pass


class ErrorBody(_Event, tag="error"):
    """``{"type": "error", "error": {"type", "message"}}``: an error response's body and
    the payload of the ``error`` event."""

    error: ErrorDetail


StreamEvent = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | ErrorBody
)

_ENCODER = msgspec.json.Encoder()


def event_name(event: StreamEvent) -> str:
    """The SSE event name of ``event``: its ``type``."""
    return str(event.__struct_config__.tag)


def sse_event(event: StreamEvent) -> bytes:
    """One server-sent event: ``event: <type>``, ``data: <the payload as JSON>``, a blank
    line (framed by http/sse.py, as every API's events are)."""
    return data_event(_ENCODER.encode(event).decode("utf-8"), event=event_name(event))
