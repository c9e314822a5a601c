"""Request bodies of Anthropic's Messages API, as msgspec Structs.

``POST /v1/messages`` takes :class:`MessagesRequest`, ``POST /v1/messages/count_tokens``
takes :class:`CountTokensRequest` (the same fields but ``max_tokens`` and the sampling
ones). The response message and the streaming events live in :mod:`.responses`.

Leniency, as in the OpenAI API: unknown fields are ignored (Anthropic adds fields every few
weeks, and Claude Code sends beta ones), every optional field accepts null, which means
Anthropic's default, and the fields this server does not act on (``context_management``,
``output_config``, ``container``, ``mcp_servers``, ``metadata``, ``service_tier``,
``cache_control``) are accepted in whatever shape they come.

Content blocks are tagged unions on ``type``: text, image, document, search_result,
tool_use, tool_result, tool_reference, thinking, redacted_thinking, and Claude Code's
tool_addition / tool_removal. A block of any other type (a server tool's
``server_tool_use`` or ``web_search_tool_result``, ``container_upload``...) is refused,
not ignored: decoding fails with msgspec's "Invalid value 'server_tool_use' - at
`$.messages[1].content[0].type`", which the strict body validation (http/validation.py)
turns into a 400 naming the type and where it is, never a 500. Dropping such a block
silently would change what the model is shown without the client knowing; this server
never sends those blocks, so a client only has them from another server.
Server tools in ``tools`` (``web_search_20250305``, ``bash_20250124``..., with a ``type``
and no ``input_schema``) are accepted; whoever serves the request decides what to do with
them (:attr:`Tool.is_server_tool`).

Cross-field rules that a type cannot say (a thinking budget below ``max_tokens``, a forced
tool that exists) are in :func:`request_problem`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_MESSAGES = 100_000
MAX_TOOLS = 1024
MAX_STOP_SEQUENCES = 16
MIN_THINKING_BUDGET = 1024
"""Anthropic's least ``thinking.budget_tokens``."""

# Litestar leaves bounds of 0 out of the OpenAPI schema (it skips falsy values), so they
# are repeated in extra_json_schema for /schema to show them.
_MIN_ZERO = {"extra": {"minimum": 0}}

JsonObject = dict[str, Any]
ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        description="A model id of GET /v1/models; any other name means the loaded model.",
    ),
]
MaxTokens = Annotated[
    int, Meta(ge=1, le=2**31 - 1, description="New tokens at most, thinking included.")
]
Temperature = Annotated[
    float,
    Meta(
        ge=0.0,
        le=1.0,
        description="Randomness, 0 to 1; 0 is greedy (default 1).",
        extra_json_schema=_MIN_ZERO,
    ),
]
TopP = Annotated[
    float,
    Meta(ge=0.0, le=1.0, description="Nucleus sampling mass.", extra_json_schema=_MIN_ZERO),
]
TopK = Annotated[
    int,
    Meta(
        ge=0,
        le=2**31 - 1,
        description="Sample from the k likeliest tokens only.",
        extra_json_schema=_MIN_ZERO,
    ),
]
StopSequence = Annotated[str, Meta(min_length=1, max_length=256)]
ToolName = Annotated[str, Meta(min_length=1, max_length=256)]
ThinkingBudget = Annotated[
    int,
    Meta(
        ge=MIN_THINKING_BUDGET,
        le=2**31 - 1,
        description="Tokens the model may think for; at least 1024, less than max_tokens.",
    ),
]


class CacheControl(msgspec.Struct, kw_only=True):
    """``cache_control``: a prompt-caching breakpoint. Accepted and ignored (llama.cpp's
    slots reuse a common prefix by themselves)."""

    type: str | None = None
    ttl: str | None = None


# ----- content blocks --------------------------------------------------------------------


class _Block(msgspec.Struct, kw_only=True, tag_field="type"):
    """A content block; ``type`` is the tag."""


class TextBlock(_Block, tag="text"):
    """``{"type": "text", "text": ...}``."""

    text: str
    cache_control: CacheControl | None = None
    citations: list[JsonObject] | None = None


class Source(msgspec.Struct, kw_only=True):
    """An image's or a document's ``source``: ``base64`` (``media_type``, ``data``),
    ``url``, ``file`` (``file_id``), ``text`` (``media_type``, ``data``) or ``content``."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    content: str | list[Any] | None = None


class ImageBlock(_Block, tag="image"):
    """``{"type": "image", "source": {...}}``."""

    source: Source
    cache_control: CacheControl | None = None


class DocumentBlock(_Block, tag="document"):
    """``{"type": "document", "source": {...}, "title", "context"}``."""

    source: Source
    title: str | None = None
    context: str | None = None
    citations: JsonObject | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Block, tag="tool_use"):
    """A call the assistant made: ``{"type": "tool_use", "id", "name", "input": {...}}``."""

    id: Annotated[str, Meta(min_length=1, max_length=256)]
    name: ToolName
    input: JsonObject | None = None
    cache_control: CacheControl | None = None


class SearchResultBlock(_Block, tag="search_result"):
    """A search hit with its text (``source`` is where it came from)."""

    source: str | None = None
    title: str | None = None
    content: list[TextBlock] | None = None
    citations: JsonObject | None = None
    cache_control: CacheControl | None = None


class ToolReferenceBlock(_Block, tag="tool_reference"):
    """A tool named, not defined: Claude Code's ToolSearch answers with these in a
    tool_result to load deferred tools (``defer_loading``)."""

    tool_name: str | None = None
    name: str | None = None


ToolResultContent = TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock


class ToolResultBlock(_Block, tag="tool_result"):
    """A call's answer, in a user message: ``content`` is a string or blocks (text, image,
    document); ``is_error`` says the call failed."""

    tool_use_id: Annotated[str, Meta(min_length=1, max_length=256)]
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Block, tag="thinking"):
    """Earlier reasoning, sent back in an assistant message."""

    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block, tag="redacted_thinking"):
    """Earlier reasoning the API returned encrypted; it has no text to show a model."""

    data: str


class ToolAdditionBlock(_Block, tag="tool_addition"):
    """Tools that change mid-conversation (Claude Code, beta
    ``mid-conversation-tool-changes``), in a ``system`` turn: ``tool`` is
    ``{"type": "tool_definition", "definition": {...}}`` or ``{"type": "tool_reference",
    "name": ...}``."""

    tool: JsonObject
    cache_control: CacheControl | None = None


class ToolRemovalBlock(_Block, tag="tool_removal"):
    """A tool withdrawn mid-conversation: ``tool`` is ``{"type": "tool_reference", "name"}``."""

    tool: JsonObject
    cache_control: CacheControl | None = None


ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ToolReferenceBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolAdditionBlock
    | ToolRemovalBlock
)


class MessageParam(msgspec.Struct, kw_only=True):
    """One turn of ``messages``. Claude Code also puts ``system`` turns among them (its
    environment section, after the user's prompt)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]

    def blocks(self) -> list[ContentBlock]:
        """The content as blocks: a string is one text block."""
        if isinstance(self.content, str):
            return [TextBlock(text=self.content)]
        return list(self.content)


# ----- tools, tool_choice, thinking ------------------------------------------------------


class Tool(msgspec.Struct, kw_only=True):
    """One of ``tools``: a client tool (``name``, ``description``, ``input_schema``; ``type``
    absent or ``custom``) or a server tool, whose ``type`` names it (``web_search_20250305``,
    ``bash_20250124``, ``text_editor_20250728``...) and which has no ``input_schema``. A
    server tool's own settings (``max_uses``, ``allowed_domains``...) are ignored here."""

    name: ToolName
    type: str | None = None
    description: str | None = None
    input_schema: JsonObject | None = None
    cache_control: CacheControl | None = None
    defer_loading: bool | None = None
    strict: bool | None = None

    @property
    def is_server_tool(self) -> bool:
        """Whether Anthropic's servers, not the client, would run this tool."""
        return self.type not in (None, "custom")


class _Choice(msgspec.Struct, kw_only=True, tag_field="type"):
    """A ``tool_choice``; ``type`` is the tag."""


class ToolChoiceAuto(_Choice, tag="auto"):
    """The model decides whether to call tools (the default with tools)."""

    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Choice, tag="any"):
    """The model must call one of the tools."""

    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Choice, tag="tool"):
    """The model must call the tool ``name``."""

    name: ToolName
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Choice, tag="none"):
    """The model must not call tools."""


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class _Thinking(msgspec.Struct, kw_only=True, tag_field="type"):
    """A ``thinking`` setting; ``type`` is the tag. ``display`` (Claude Code sends
    ``"omitted"``) says whether thinking text is returned."""

    display: str | None = None


class ThinkingEnabled(_Thinking, tag="enabled"):
    """Extended thinking with a token budget."""

    budget_tokens: ThinkingBudget


class ThinkingAdaptive(_Thinking, tag="adaptive"):
    """The model decides how long to think (Claude Code's default for models it does not
    know, with ``output_config.effort``)."""


class ThinkingDisabled(_Thinking, tag="disabled"):
    """No thinking."""


ThinkingConfig = ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled


class Metadata(msgspec.Struct, kw_only=True):
    """``metadata``; Claude Code's ``user_id`` is a JSON string (device, account, session)."""

    user_id: str | None = None


class OutputConfig(msgspec.Struct, kw_only=True):
    """``output_config``: ``effort`` (``low``/``medium``/``high``...) and ``format`` (a
    JSON-schema output format)."""

    effort: str | None = None
    format: JsonObject | None = None


# ----- requests --------------------------------------------------------------------------


class CountTokensRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/messages/count_tokens``: what the prompt of a Messages request would be."""

    model: ModelName
    messages: Annotated[list[MessageParam], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    context_management: JsonObject | None = None
    output_config: OutputConfig | None = None
    mcp_servers: list[JsonObject] | None = None

    def system_blocks(self) -> list[TextBlock]:
        """``system`` as text blocks (none when absent)."""
        if self.system is None:
            return []
        if isinstance(self.system, str):
            return [TextBlock(text=self.system)] if self.system else []
        return list(self.system)

    def system_text(self) -> str:
        """``system`` as one string, its blocks joined by blank lines."""
        return "\n\n".join(block.text for block in self.system_blocks())


class MessagesRequest(CountTokensRequest, kw_only=True):
    """``POST /v1/messages``."""

    max_tokens: MaxTokens
    stop_sequences: Annotated[list[StopSequence], Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stream: bool | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None
    container: str | JsonObject | None = None


def request_problem(request: CountTokensRequest) -> str | None:
    """What is wrong with ``request`` beyond its types, as a 400's message; None if nothing.

    A client tool needs ``input_schema``; tool names are unique; a forced tool
    (``tool_choice: {"type": "tool"}``) is one of ``tools``; a thinking budget is below
    ``max_tokens``.
    """
    tools = request.tools or []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if not tool.is_server_tool and tool.input_schema is None:
            return f"'tools[{i}].input_schema': required for the client tool {tool.name!r}"
        if tool.name in seen:
            return f"'tools[{i}].name': the tool name {tool.name!r} is used twice"
        seen.add(tool.name)
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceTool) and choice.name not in seen:
        return f"'tool_choice.name': {choice.name!r} is not one of the request's tools"
    thinking = request.thinking
    if (
        isinstance(request, MessagesRequest)
        and isinstance(thinking, ThinkingEnabled)
        and thinking.budget_tokens >= request.max_tokens
    ):
        return "'thinking.budget_tokens': must be less than max_tokens"
    return None
