"""Response shapes of OpenAI's Responses API: the ``response`` object, its output items
and usage, as msgspec Structs (``type`` is each item's tag, as OpenAI spells it).

An output item is also a valid input item (protocol.InputItem): a stored response's
output continues the conversation by being read back as input (store.py).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class OutputText(msgspec.Struct, kw_only=True, tag_field="type", tag="output_text"):
    """A message's text."""

    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class ReasoningText(msgspec.Struct, kw_only=True, tag_field="type", tag="reasoning_text"):
    """The model's thinking, as it wrote it."""

    text: str


class SummaryText(msgspec.Struct, kw_only=True, tag_field="type", tag="summary_text"):
    """A summary of the thinking (none is made here; the type is for streamed parts)."""

    text: str


class MessageItem(msgspec.Struct, kw_only=True, tag_field="type", tag="message"):
    """The assistant's text."""

    id: str
    status: ItemStatus
    content: list[OutputText]
    role: str = "assistant"


class ReasoningItem(msgspec.Struct, kw_only=True, tag_field="type", tag="reasoning"):
    """A thinking model's reasoning: ``content`` holds it, ``summary`` is empty."""

    id: str
    summary: list[SummaryText]
    content: list[ReasoningText]
    status: ItemStatus = "completed"


class FunctionCallItem(
    msgspec.Struct, kw_only=True, tag_field="type", tag="function_call", omit_defaults=True
):
    """A call of a function tool; ``namespace`` names the namespace tool it belongs to."""

    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"
    namespace: str | None = None


class CustomToolCallItem(
    msgspec.Struct, kw_only=True, tag_field="type", tag="custom_tool_call", omit_defaults=True
):
    """A call of a custom tool: ``input`` is the free-form text the model wrote for it."""

    id: str
    call_id: str
    name: str
    input: str
    status: ItemStatus = "completed"
    namespace: str | None = None


OutputItem = MessageItem | ReasoningItem | FunctionCallItem | CustomToolCallItem


class InputTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int
    """Prompt tokens whose computation was reused from an earlier request."""
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int


class ResponseUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(msgspec.Struct, kw_only=True):
    """Why a response failed: ``code`` is what clients test (Codex: context_length_exceeded)."""

    code: str
    message: str


class IncompleteDetails(msgspec.Struct, kw_only=True):
    reason: str


class ResponseObject(msgspec.Struct, kw_only=True):
    """The ``response`` object, whole or as the stream's lifecycle events carry it."""

    id: str
    created_at: int
    status: ResponseStatus
    model: str
    output: list[OutputItem]
    object: str = "response"
    output_text: str = ""
    """The text of every message item joined (the SDKs compute it too)."""
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"
    tools: list[Any] = msgspec.field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    text: Any = None
    reasoning: Any = None
    store: bool = False
    truncation: str = "disabled"
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    user: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str = "default"
    background: bool = False
    usage: ResponseUsage | None = None


class DeletedResponse(msgspec.Struct, kw_only=True):
    """DELETE /v1/responses/{id}'s answer."""

    id: str
    object: str = "response"
    deleted: bool = True
