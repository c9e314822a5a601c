"""Request bodies of the OpenAI-compatible API, as msgspec Structs.

OpenAI's clients send fields this server does not use (and new ones every few months), and
send null for "not set": unknown fields are ignored and every optional field accepts null,
which means OpenAI's default. The ``Meta`` bounds are the validation rules and also appear
in the OpenAPI schema at /schema. Response shapes live in :mod:`.responses`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_STOP_STRINGS = 16
MAX_MESSAGES = 4096
MAX_PROMPTS = 64
MAX_TOOLS = 128
MAX_N = 64
"""The schema's bound for ``n``; the server's own limit is the ``max_n`` setting."""

# Litestar leaves bounds of 0 out of the OpenAPI schema (it skips falsy values), so they
# are repeated in extra_json_schema for /schema to show them.
_MIN_ZERO = {"extra": {"minimum": 0}}

ModelName = Annotated[
    str,
    Meta(
        max_length=200,
        description="A model id of GET /v1/models; any other name means the loaded model.",
    ),
]
MaxTokens = Annotated[int, Meta(ge=1, description="New tokens at most (default: the context).")]
Temperature = Annotated[
    float,
    Meta(
        ge=0.0,
        le=2.0,
        description="Randomness; 0 is greedy (default 1).",
        extra_json_schema=_MIN_ZERO,
    ),
]
TopP = Annotated[
    float,
    Meta(
        ge=0.0,
        le=1.0,
        description="Nucleus sampling mass (default 1).",
        extra_json_schema=_MIN_ZERO,
    ),
]
Choices = Annotated[
    int,
    Meta(
        ge=1, le=MAX_N, description="Choices to generate (default 1; at most the server's max_n)."
    ),
]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0, description="OpenAI's penalty (default 0).")]
Seed = Annotated[
    int,
    Meta(ge=-(2**63), le=2**63 - 1, description="Same seed and request give the same output."),
]
TopLogprobs = Annotated[
    int,
    Meta(ge=0, le=20, description="Alternatives per token (0-20).", extra_json_schema=_MIN_ZERO),
]
StopString = Annotated[str, Meta(min_length=1, max_length=256)]
Stop = StopString | Annotated[list[StopString], Meta(max_length=MAX_STOP_STRINGS)]
LogitBias = Annotated[
    dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]],
    Meta(description="Token id (as a string) -> bias added to its logit (-100 bans it)."),
]
JsonObject = dict[str, Any]


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``."""

    include_usage: bool | None = None
    """Send a last chunk with ``choices: []`` and the request's usage."""


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    """``response_format.json_schema``."""

    name: str | None = None
    description: str | None = None
    schema: JsonObject | bool | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    """``response_format``: plain text, any JSON object, or JSON valid under a schema. The
    JSON forms are enforced with a grammar, so the output always parses (unless cut short by
    max_tokens)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(msgspec.Struct, kw_only=True):
    """The fields /v1/chat/completions and /v1/completions share. Null means the default."""

    model: ModelName | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Choices | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple, whichever form the client sent."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


# ----- chat ----------------------------------------------------------------------------------


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a message's content; only ``{"type": "text", "text": ...}`` is served."""

    type: str
    text: str | None = None


class FunctionCallIn(msgspec.Struct, kw_only=True):
    """The function of a tool call in an earlier assistant turn."""

    name: str
    arguments: str | JsonObject | None = None


class ToolCallIn(msgspec.Struct, kw_only=True):
    """A tool call in an earlier assistant turn."""

    id: str | None = None
    type: str | None = None
    function: FunctionCallIn


class ChatMessageIn(msgspec.Struct, kw_only=True):
    """One turn: system, developer, user, assistant (perhaps with tool calls) or tool."""

    role: Annotated[str, Meta(min_length=1, max_length=64)]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    """``tools[].function``: a function the model may call."""

    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: JsonObject | None = None
    """JSON Schema of the arguments object; absent means any object."""
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    """``tools[]``."""

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(msgspec.Struct, kw_only=True):
    """``tool_choice.function``."""

    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``: call this one."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ChatCompletionRequest(SamplingFields, kw_only=True):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessageIn], Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None


# ----- completions ---------------------------------------------------------------------------


class CompletionRequest(SamplingFields, kw_only=True):
    """POST /v1/completions."""

    prompt: str | Annotated[list[Any], Meta(min_length=1, max_length=MAX_PROMPTS)]
    """A string, or a list of strings (one choice, or ``n``, per prompt). Token-id prompts
    are refused with a 400: send text."""
    suffix: str | None = None
    """Text after the completion: fill-in-the-middle, for models with FIM tokens."""
    echo: bool | None = None
    logprobs: Annotated[int, Meta(ge=0, le=20, extra_json_schema=_MIN_ZERO)] | None = None
    best_of: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
