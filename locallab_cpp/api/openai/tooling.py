"""Tool calling for /v1/chat/completions: what a request's ``tools`` and ``tool_choice``
ask of the generation, and which parsed calls may go back to the client.

The model sees the tools through its own chat template; its calls are parsed (and, when
forced, grammar-constrained) by :mod:`locallab_cpp.serving.tools` in its family's format.
A call only reaches the client with arguments that parse as JSON and match the function's
schema: ``required`` and a named function get a grammar that allows nothing else, and
every call is validated (:mod:`.choice`: an invalid or cut-off call stays text in
``content``). Each tool's ``parameters`` is checked when the request arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from locallab_cpp.api.openai.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    NamedToolChoice,
    Tool,
)
from locallab_cpp.engine.types import ChatMessage, ToolCall, ToolSpec
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving.tools import (
    ToolCallFormat,
    new_call_id,
    schema_problem,
    validate_arguments,
)

ToolMode = Literal["off", "auto", "required", "named"]
ANY_OBJECT: Mapping[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What a request's tools mean for its generation."""

    mode: ToolMode
    tools: list[ToolSpec] | None = None
    """Handed to the chat template; None when the model is offered no tools."""
    name: str | None = None
    """The function ``tool_choice`` names."""
    parallel: bool = True
    schemas: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each function's parameters schema, for validating ``auto`` calls."""

    @property
    def active(self) -> bool:
        """Whether the output is read for tool calls."""
        return self.mode != "off"

    @property
    def forced(self) -> bool:
        """Whether a grammar makes the model call a tool."""
        return self.mode in ("required", "named")

    def grammar(self, fmt: ToolCallFormat) -> str | None:
        """The GBNF forcing a call, for ``required`` and a named function."""
        if not self.forced or self.tools is None:
            return None
        return fmt.grammar(self.tools, self.name, self.parallel)

    def invalid(self, name: str, arguments: str) -> str | None:
        """Why a call may not go to the client (unknown function, arguments that do not
        parse or match the schema), or None when it may."""
        schema = self.schemas.get(name)
        if schema is None:
            return f"no function named {name!r} was offered"
        if self.mode == "named" and name != self.name:
            return f"tool_choice names {self.name!r}"
        return validate_arguments(arguments, schema)


def check_parameters(tools: Sequence[Tool]) -> None:
    """400 for a tool whose ``parameters`` is no usable JSON Schema, before anything reads
    it (the grammar converter and the argument check would otherwise meet it later)."""
    for i, tool in enumerate(tools):
        if tool.function.parameters is None:
            continue
        problem = schema_problem(tool.function.parameters, f"tools[{i}].function.parameters")
        if problem is not None:
            raise InvalidRequest(
                f"Invalid request: 'tools': {problem} (function {tool.function.name[:64]!r})."
            )


def plan_tools(data: ChatCompletionRequest) -> ToolPlan:
    """The tool plan of a request; 400 for a choice that cannot be met."""
    choice = data.tool_choice or "auto"
    tools = data.tools or []
    check_parameters(tools)
    if choice == "none" or (not tools and choice == "auto"):
        return ToolPlan(mode="off")
    if not tools:
        raise InvalidRequest(
            "Invalid request: 'tool_choice': it asks for a tool call, but 'tools' is empty."
        )
    specs: list[ToolSpec] = []
    schemas: dict[str, Mapping[str, Any]] = {}
    for tool in tools:
        fn = tool.function
        function: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            function["description"] = fn.description
        function["parameters"] = fn.parameters if fn.parameters is not None else ANY_OBJECT
        specs.append({"type": "function", "function": function})  # type: ignore[typeddict-item]
        schemas[fn.name] = function["parameters"]
    parallel = data.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in schemas:
            raise InvalidRequest(
                f"Invalid request: 'tool_choice': no function named {name[:64]!r} is in 'tools'."
            )
        return ToolPlan("named", specs, name, parallel=False, schemas=schemas)
    mode: ToolMode = "required" if choice == "required" else "auto"
    return ToolPlan(mode, specs, None, parallel=parallel, schemas=schemas)


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


def messages_for(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """The conversation as the engine's chat messages (OpenAI's shape, text only).

    "developer" is OpenAI's newer name for "system", which is what templates know.
    """
    out: list[ChatMessage] = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        message: ChatMessage = {"role": role, "content": _text_of(m)}
        if m.tool_calls:
            calls: list[ToolCall] = [
                {
                    "id": tc.id or new_call_id(),
                    "type": "function",
                    "function": {
                        "name": tc.function.name,
                        "arguments": tc.function.arguments
                        if tc.function.arguments is not None
                        else "{}",
                    },
                }
                for tc in m.tool_calls
            ]
            message["tool_calls"] = calls
        elif message["content"] is None:
            message["content"] = ""
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out
