"""The bodies of POST /api/chat and POST /api/generate and their answers, as msgspec Structs.

Lenient as Ollama's server is: unknown fields are ignored, every optional field takes
null (its default), ``options`` is any object (chat_translate.py reads the options it knows
and logs the others). ``format`` is ``"json"``, ``""`` or a JSON schema object. ``think`` is
a boolean or ``"low"`` / ``"medium"`` / ``"high"``. ``keep_alive`` is seconds or a duration
string (keepalive.py).

The answers omit the optional fields that are None (Ollama's ``omitempty``): chunks before
the last carry no ``done_reason`` or timings; the last one carries all of them. ``done``,
``message.role`` / ``content`` and ``response`` are always there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_MESSAGES = 100_000
MAX_TOOLS = 1024
MAX_IMAGES = 64

JsonObject = dict[str, Any]
ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=300,
        description="A model of GET /api/tags, as `id:tag` (`gemma-3-270m:latest`) or `id`.",
    ),
]
KeepAlive = Annotated[
    float | str,
    Meta(description='Seconds, or a duration ("5m"); -1 keeps the model loaded, 0 unloads.'),
]
Think = Annotated[
    bool | Literal["low", "medium", "high"],
    Meta(description="Report the model's reasoning in `thinking` (true or an effort level)."),
]
Format = Annotated[
    Literal["", "json"] | JsonObject,
    Meta(description='"json" for any JSON object, or a JSON schema the answer must match.'),
]
Options = Annotated[
    JsonObject,
    Meta(description="Model options (temperature, top_k, num_predict, num_ctx, stop...)."),
]


class _Lenient(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Unknown fields are ignored (msgspec's default for a Struct)."""


class CallFunction(_Lenient):
    """A call's function: its name and its arguments (an object; JSON text is read too)."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]
    arguments: JsonObject | str | None = None
    index: int | None = None


class ToolCallIn(_Lenient):
    """A tool call an earlier assistant turn made."""

    function: CallFunction
    id: Annotated[str, Meta(max_length=256)] | None = None
    type: str | None = None


class ChatMessage(_Lenient):
    """One turn: ``role`` system, user, assistant or tool (``tool_name``: the tool that
    answered; ``tool_call_id`` if the client kept the call's id)."""

    role: Annotated[str, Meta(min_length=1, max_length=64)]
    content: str | None = None
    thinking: str | None = None
    images: Annotated[list[Any], Meta(max_length=MAX_IMAGES)] | None = None
    tool_calls: Annotated[list[ToolCallIn], Meta(max_length=MAX_TOOLS)] | None = None
    tool_name: Annotated[str, Meta(max_length=256)] | None = None
    tool_call_id: Annotated[str, Meta(max_length=256)] | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None


class ToolFunctionIn(_Lenient):
    """A tool's function: name, description, JSON schema of its arguments."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]
    description: str | None = None
    parameters: JsonObject | None = None


class ToolIn(_Lenient):
    """``{"type": "function", "function": {...}}``."""

    function: ToolFunctionIn
    type: str | None = "function"


class _Common(_Lenient):
    model: ModelName
    stream: bool | None = None
    """None: streamed (Ollama's default)."""
    format: Format | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    think: Think | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None

    @property
    def streamed(self) -> bool:
        """Whether the answer is an NDJSON stream (unless ``stream: false``)."""
        return self.stream is not False


class ChatBody(_Common):
    """POST /api/chat."""

    messages: Annotated[list[ChatMessage], Meta(max_length=MAX_MESSAGES)] | None = None
    tools: Annotated[list[ToolIn], Meta(max_length=MAX_TOOLS)] | None = None


class GenerateBody(_Common):
    """POST /api/generate."""

    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    """A previous answer's context: accepted and ignored (prompt reuse needs none)."""
    raw: bool | None = None
    images: Annotated[list[Any], Meta(max_length=MAX_IMAGES)] | None = None


# ----- answers -------------------------------------------------------------------------------


class CallFunctionOut(msgspec.Struct, kw_only=True):
    """A call's function, its arguments as an object."""

    index: int
    name: str
    arguments: JsonObject


class ToolCallOut(msgspec.Struct, kw_only=True):
    """A tool call the model made."""

    id: str
    function: CallFunctionOut


class MessageOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The assistant's message (a chunk's part of it, streamed)."""

    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCallOut] | None = None


DoneReason = Literal["stop", "length", "load", "unload"]


class ChatChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of /api/chat's stream, or its whole answer (fields in Ollama's order)."""

    model: str
    created_at: str
    message: MessageOut
    done: bool
    done_reason: DoneReason | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of /api/generate's stream, or its whole answer (fields in Ollama's order)."""

    model: str
    created_at: str
    response: str
    thinking: str | None = None
    done: bool
    done_reason: DoneReason | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
