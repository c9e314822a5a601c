"""OpenAI's chat request in serving's terms: messages as turns, ``tools`` and
``tool_choice`` as a tool plan, ``response_format`` as a JSON schema, its limits and
defaults (serving/chat.py does the rest, for every API alike)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from locallab_cpp.api.openai.common import model_id_of, sampling_from
from locallab_cpp.api.openai.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    NamedToolChoice,
    ResponseFormat,
)
from locallab_cpp.engine.schema import JSON_OBJECT_SCHEMA
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import ChatRequest
from locallab_cpp.serving.tools import (
    NamedTool,
    ToolChoice,
    ToolDef,
    ToolPlan,
    new_call_id,
    plan_tools,
)
from locallab_cpp.serving.turns import CallMade, Turn


def chat_request(data: ChatCompletionRequest, models: ModelManager, n: int) -> ChatRequest:
    """The request in serving's terms; 400 for tools or a tool choice that cannot be met."""
    logprobs = bool(data.logprobs)
    return ChatRequest(
        turns=turns_of(data.messages),
        sampling=sampling_from(data),
        max_tokens=data.max_tokens
        if data.max_completion_tokens is None
        else data.max_completion_tokens,
        model=model_id_of(models, data.model),
        tools=plan_of(data),
        stop=data.stop_strings(),
        n=n,
        logprobs=(data.top_logprobs or 0) if logprobs else None,
        json_schema=response_schema(data.response_format),
    )


def plan_of(data: ChatCompletionRequest) -> ToolPlan:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as serving's tool plan."""
    tools = [
        ToolDef(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters,
            where=f"tools[{i}].function.parameters",
        )
        for i, tool in enumerate(data.tools or ())
    ]
    choice: ToolChoice | None
    if isinstance(data.tool_choice, NamedToolChoice):
        choice = NamedTool(data.tool_choice.function.name)
    else:
        choice = data.tool_choice
    return plan_tools(tools, choice, parallel=data.parallel_tool_calls is not False)


def response_schema(response_format: ResponseFormat | None) -> Mapping[str, Any] | bool | None:
    """The JSON schema the output must match (any object, or the one given), or None."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return JSON_OBJECT_SCHEMA
    spec = response_format.json_schema
    if spec is None or spec.schema is None:
        raise InvalidRequest(
            "Invalid request: 'response_format': type json_schema needs "
            '"json_schema": {"name": ..., "schema": {...}}.'
        )
    return spec.schema


# ----- the conversation ----------------------------------------------------------------------

_TEXT_PARTS = ("text", "input_text")


def _text_of(message: ChatMessageIn) -> str | None:
    content = message.content
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type not in _TEXT_PARTS:
            raise InvalidRequest(
                f"Invalid request: 'messages': content parts of type {part.type[:40]!r} are "
                "not supported; this server reads text parts only."
            )
        texts.append(part.text or "")
    return "".join(texts)


def turns_of(messages: Sequence[ChatMessageIn]) -> list[Turn]:
    """OpenAI's messages as turns (text only).

    "developer" is OpenAI's newer name for "system", which is what templates know.
    """
    return [
        Turn(
            role="system" if m.role == "developer" else m.role,
            content=_text_of(m),
            tool_calls=tuple(
                CallMade(
                    id=tc.id or new_call_id(),
                    name=tc.function.name,
                    arguments=tc.function.arguments if tc.function.arguments is not None else "{}",
                )
                for tc in m.tool_calls or ()
            ),
            tool_call_id=m.tool_call_id,
            name=m.name,
        )
        for m in messages
    ]
