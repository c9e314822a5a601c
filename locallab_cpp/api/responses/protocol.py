"""Request bodies of OpenAI's Responses API (POST /v1/responses), as msgspec Structs.

Clients (Codex, the Agents SDK) send many fields this server has no use for, and new ones
every month: unknown fields are ignored and every optional field accepts null. Input items
and tools are read as one flat struct per kind of thing (their ``type`` says which fields
matter), so an item type or tool type this server does not know is still parsed and can
be refused or left out with a clear message rather than a schema error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from locallab_cpp.api.openai.protocol import (
    MaxTokens,
    ModelName,
    Stop,
    Temperature,
    TopP,
)

MAX_INPUT_ITEMS = 8192
MAX_PARTS = 1024
MAX_TOOLS = 256
MAX_INCLUDE = 32

JsonObject = dict[str, Any]
ShortText = Annotated[str, Meta(max_length=256)]
ToolName = Annotated[str, Meta(min_length=1, max_length=128)]


class ContentPart(msgspec.Struct, kw_only=True):
    """A part of a message's content: ``input_text``, ``output_text``, ``refusal`` are
    read; ``input_image`` and ``input_file`` are refused (no vision here yet)."""

    type: ShortText
    text: str | None = None
    refusal: str | None = None


class SummaryPart(msgspec.Struct, kw_only=True):
    """A part of a reasoning item's ``summary`` or ``content``."""

    type: ShortText | None = None
    text: str | None = None


class InputItem(msgspec.Struct, kw_only=True):
    """One item of ``input``; ``type`` says which fields it uses.

    - ``message`` (also a bare ``{role, content}``): ``role`` and ``content``;
    - ``function_call``: ``call_id``, ``name`` (``namespace`` for a namespace tool's),
      ``arguments``; ``function_call_output``: ``call_id``, ``output``;
    - ``custom_tool_call``: ``call_id``, ``name``, ``input``;
      ``custom_tool_call_output``: ``call_id``, ``output``;
    - ``reasoning``: ``summary`` and/or ``content`` (``encrypted_content`` is ignored);
    - ``item_reference``: ``id`` of an item of a stored response.
    """

    type: ShortText | None = None
    id: Annotated[str, Meta(max_length=256)] | None = None
    role: ShortText | None = None
    content: str | Annotated[list[ContentPart], Meta(max_length=MAX_PARTS)] | None = None
    call_id: Annotated[str, Meta(max_length=256)] | None = None
    name: ToolName | None = None
    namespace: ToolName | None = None
    arguments: str | JsonObject | None = None
    input: str | None = None
    output: str | Annotated[list[ContentPart], Meta(max_length=MAX_PARTS)] | None = None
    summary: Annotated[list[SummaryPart], Meta(max_length=MAX_PARTS)] | None = None
    encrypted_content: str | None = None
    status: ShortText | None = None


class Tool(msgspec.Struct, kw_only=True):
    """One entry of ``tools``: ``function`` (``name``, ``parameters``), ``custom``
    (``name``, free-form text input; ``format`` is ignored), ``namespace`` (``name`` and
    ``tools`` inside it), or a built-in tool type (left out: nothing here can run it)."""

    type: ShortText
    name: ToolName | None = None
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None
    format: JsonObject | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """``tool_choice`` as an object: ``{"type": "function" | "custom", "name": ...}`` names
    the tool to call; a built-in type or ``allowed_tools`` means auto here."""

    type: ShortText
    name: ToolName | None = None


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class TextFormat(msgspec.Struct, kw_only=True):
    """``text.format``: plain text, any JSON object, or JSON valid under ``schema`` (the
    JSON forms are enforced with a grammar, so the output parses unless cut short)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: JsonObject | bool | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    """``text``: ``format``; ``verbosity`` is accepted and ignored."""

    format: TextFormat | None = None
    verbosity: ShortText | None = None


class ReasoningConfig(msgspec.Struct, kw_only=True):
    """``reasoning``: ``effort`` and ``summary`` are accepted; thinking models think as
    their template has them, and their thinking comes back as a ``reasoning`` item."""

    effort: ShortText | None = None
    summary: ShortText | None = None
    generate_summary: ShortText | None = None


class ResponseRequest(msgspec.Struct, kw_only=True):
    """POST /v1/responses."""

    model: ModelName | None = None
    input: str | Annotated[list[InputItem], Meta(max_length=MAX_INPUT_ITEMS)] | None = None
    instructions: str | None = None
    """A system message first; not carried over by ``previous_response_id``, as OpenAI's."""
    previous_response_id: Annotated[str, Meta(max_length=256)] | None = None
    store: bool | None = None
    """Keep the response in memory for ``previous_response_id`` and GET (default false)."""
    stream: bool | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    """Not OpenAI's (its Responses API has none); honoured where a client sends it."""
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    include: Annotated[list[str], Meta(max_length=MAX_INCLUDE)] | None = None
    truncation: ShortText | None = None
    service_tier: ShortText | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    background: bool | None = None

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple, whichever form the client sent."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
