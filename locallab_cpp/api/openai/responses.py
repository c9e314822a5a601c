"""Response bodies of the OpenAI-compatible API, as msgspec Structs, in OpenAI's shapes.

Fields OpenAI sends as null (``logprobs``, a message's ``content`` when it only calls
tools) are always present; fields OpenAI leaves out when unused (``tool_calls``,
``reasoning_content``, a delta's ``role``) are omitted when None (``omit_defaults``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from locallab_cpp.engine.types import FinishReason


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    """``usage.prompt_tokens_details``."""

    cached_tokens: int = 0
    """Prompt tokens found in a slot's KV cache and not computed again."""


class Usage(msgspec.Struct, kw_only=True):
    """Real token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


# ----- logprobs ------------------------------------------------------------------------------


class TopLogprob(msgspec.Struct, kw_only=True):
    """One alternative at a position (chat shape)."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(msgspec.Struct, kw_only=True):
    """One generated token with its alternatives (chat shape)."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct, kw_only=True):
    """A chat choice's ``logprobs``."""

    content: list[TokenLogprobOut] | None
    refusal: None = None


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    """A completion choice's ``logprobs`` (the legacy shape)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


# ----- chat ----------------------------------------------------------------------------------


class FunctionCallOut(msgspec.Struct, kw_only=True):
    """The function a tool call names and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, kw_only=True):
    """One call in ``message.tool_calls``."""

    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``choices[].message``; ``content`` is null when the turn only calls tools."""

    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    reasoning_content: str | None = None
    """The model's thinking (``<think>...</think>``), apart from the answer."""
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    """One choice of a chat completion."""

    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(msgspec.Struct, kw_only=True):
    """Reply to POST /v1/chat/completions."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A piece of a streamed call: its name (first delta only) and an arguments fragment."""

    name: str | None = None
    arguments: str | None = None
    """Set on every delta: "" on a call's first (beside its name), then the fragments."""


class ToolCallDeltaOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A streamed tool call piece; the first of a call carries its id, type and name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class ChatDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``choices[].delta`` of a chat stream."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChatChunkChoice(msgspec.Struct, kw_only=True):
    """One choice's piece of a ``chat.completion.chunk``."""

    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# ----- completions ---------------------------------------------------------------------------


class CompletionChoice(msgspec.Struct, kw_only=True):
    """One choice of a text completion (also a stream chunk's, with the text so far)."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None


class TextCompletion(msgspec.Struct, kw_only=True):
    """Reply to POST /v1/completions, and each event of its stream."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# ----- models --------------------------------------------------------------------------------


class ModelCard(msgspec.Struct, kw_only=True):
    """One model of GET /v1/models: OpenAI's four fields, then what clients need to know
    about its context (llama-server and vLLM name it these ways)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    context_length: int
    """Tokens one request can use, prompt and completion together."""
    max_model_len: int
    """The same, as vLLM calls it."""
    loaded: bool
    """Whether this is the model generating now (others load when a request names them)."""
    meta: dict[str, Any] | None = None


class ModelList(msgspec.Struct, kw_only=True):
    """Reply to GET /v1/models."""

    object: Literal["list"]
    data: list[ModelCard]
