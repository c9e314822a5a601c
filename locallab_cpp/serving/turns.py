"""A conversation as every API's messages map into it, and as the chat template gets it.

Each API parses its own message shapes (content parts, role names, call ids) into
:class:`Turn` objects; :func:`messages_of` is the one mapping to the engine's chat
messages (engine/types.py, ``ChatMessage``: OpenAI's shape, which the GGUF templates read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from locallab_cpp.engine.types import ChatMessage, ToolCall


@dataclass(frozen=True, slots=True)
class CallMade:
    """A tool call an earlier assistant turn made."""

    id: str
    name: str
    arguments: str | Mapping[str, Any]
    """JSON text or the object itself (rendering parses text that holds an object)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation.

    ``role`` is "system", "user", "assistant" or "tool" (others reach the template as they
    are). An assistant turn may carry ``tool_calls`` and the ``reasoning`` it showed; a
    "tool" turn is a call's result: ``content`` the result, ``tool_call_id`` the call it
    answers and ``name`` its function (some templates print it)."""

    role: str
    content: str | None = None
    tool_calls: tuple[CallMade, ...] = ()
    reasoning: str | None = None
    tool_call_id: str | None = None
    name: str | None = None


def messages_of(turns: Sequence[Turn]) -> list[ChatMessage]:
    """The turns as the engine's chat messages."""
    out: list[ChatMessage] = []
    for turn in turns:
        message: ChatMessage = {"role": turn.role, "content": turn.content}
        if turn.tool_calls:
            calls: list[ToolCall] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in turn.tool_calls
            ]
            message["tool_calls"] = calls
        elif turn.content is None:
            message["content"] = ""  # templates print content; only a caller may have none
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if turn.tool_call_id is not None:
            message["tool_call_id"] = turn.tool_call_id
        if turn.name is not None:
            message["name"] = turn.name
        out.append(message)
    return out
