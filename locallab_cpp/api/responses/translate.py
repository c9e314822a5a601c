"""A Responses request in serving's terms: input items as turns, ``tools`` and
``tool_choice`` as a tool plan, ``text.format`` as a JSON schema, OpenAI's defaults.

Tools the model sees are functions: a ``custom`` tool (free-form text, Codex's
``apply_patch``) is offered as a function of one string, ``input``; a ``namespace``
tool's functions are offered under ``<namespace>__<name>``. :class:`ToolNames` maps the
model's calls back to the client's names (render.py) and the client's earlier calls to
the model's (here), so a conversation reads the same both ways.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from locallab_cpp.api.openai.common import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from locallab_cpp.api.responses.protocol import (
    ContentPart,
    InputItem,
    NamedToolChoice,
    ResponseRequest,
    TextFormat,
    Tool,
)
from locallab_cpp.engine.schema import JSON_OBJECT_SCHEMA
from locallab_cpp.engine.types import SamplingParams
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import ChatRequest
from locallab_cpp.serving.tools import NamedTool, ToolChoice, ToolDef, ToolPlan, plan_tools
from locallab_cpp.serving.turns import CallMade, Turn

logger = logging.getLogger("locallab_cpp")

CUSTOM_INPUT = "input"
"""The one argument a custom tool's function takes: the tool's free-form text."""
CUSTOM_PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's input text."}},
    "required": [CUSTOM_INPUT],
}
BUILTIN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "file_search",
        "local_shell",
        "computer_use_preview",
        "computer_use",
        "image_generation",
        "mcp",
        "code_interpreter",
        "tool_search",
    }
)
"""OpenAI's hosted tools: nothing here can run them, so they are left out of the prompt."""

CallKind = Literal["function", "custom"]
Lookup = Callable[[str], InputItem | None]
"""The item a stored response holds under an id (for ``item_reference``), or None."""


@dataclass(frozen=True, slots=True)
class ClientTool:
    """What a name the model calls means to the client."""

    kind: CallKind
    name: str
    namespace: str | None = None


@dataclass
class ToolNames:
    """The model's tool names and the client's tools they stand for."""

    tools: dict[str, ClientTool] = field(default_factory=dict)

    def add(self, kind: CallKind, name: str, namespace: str | None = None) -> str:
        model_name = name if namespace is None else f"{namespace}__{name}"
        self.tools[model_name] = ClientTool(kind, name, namespace)
        return model_name

    def client(self, model_name: str) -> ClientTool:
        """The client's tool for a call the model made (a function if not offered)."""
        return self.tools.get(model_name) or ClientTool("function", model_name)

    def model_name(self, name: str, namespace: str | None) -> str:
        return name if namespace is None else f"{namespace}__{name}"


def tool_defs(tools: Sequence[Tool], names: ToolNames) -> list[ToolDef]:
    """The functions the model is offered; built-in tools are left out with a log line."""
    defs: list[ToolDef] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.type == "namespace":
            for j, inner in enumerate(tool.tools or ()):
                defs += _tool_def(inner, names, f"{where}.tools[{j}]", _name(tool, where))
        elif tool.type in ("function", "custom"):
            defs += _tool_def(tool, names, where, None)
        else:
            # A client offering hosted tools still gets an answer, without them.
            logger.info("responses: tool type %r left out: this server cannot run it", tool.type)
    return defs


def _name(tool: Tool, where: str) -> str:
    if not tool.name:
        raise InvalidRequest(f"Invalid request: '{where}.name': a {tool.type} tool needs a name.")
    return tool.name


def _tool_def(tool: Tool, names: ToolNames, where: str, namespace: str | None) -> list[ToolDef]:
    if tool.type == "custom":
        model_name = names.add("custom", _name(tool, where), namespace)
        return [ToolDef(model_name, tool.description, CUSTOM_PARAMETERS, where)]
    if tool.type != "function":
        logger.info("responses: tool type %r left out of %s", tool.type, where)
        return []
    model_name = names.add("function", _name(tool, where), namespace)
    return [ToolDef(model_name, tool.description, tool.parameters, f"{where}.parameters")]


def plan_of(data: ResponseRequest, names: ToolNames) -> ToolPlan:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as serving's tool plan."""
    defs = tool_defs(data.tools or (), names)
    choice: ToolChoice | None
    if isinstance(data.tool_choice, NamedToolChoice):
        choice = _named_choice(data.tool_choice, names)
    else:
        choice = data.tool_choice
    return plan_tools(defs, choice, parallel=data.parallel_tool_calls is not False)


def _named_choice(choice: NamedToolChoice, names: ToolNames) -> ToolChoice:
    if choice.type not in ("function", "custom") or choice.name is None:
        return "auto"  # allowed_tools, a hosted tool: the model chooses among what it has
    if choice.name in names.tools:
        return NamedTool(choice.name)
    inside = [m for m, t in names.tools.items() if t.name == choice.name]
    return NamedTool(inside[0] if len(inside) == 1 else choice.name)


def response_schema(fmt: TextFormat | None) -> Mapping[str, Any] | bool | None:
    """The JSON schema the output must match (any object, or the one given), or None."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JSON_OBJECT_SCHEMA
    if fmt.schema is None:
        raise InvalidRequest(
            'Invalid request: \'text.format\': type json_schema needs "name" and "schema": {...}.'
        )
    return fmt.schema


def chat_request(
    data: ResponseRequest, models: ModelManager, items: Sequence[InputItem], names: ToolNames
) -> ChatRequest:
    """The request in serving's terms (``items``: the conversation, earlier turns of a
    previous response included); 400 for tools or a tool choice that cannot be met."""
    plan = plan_of(data, names)
    turns = turns_of(items, names)
    if data.instructions:
        turns.insert(0, Turn(role="system", content=data.instructions))
    if not turns:
        raise InvalidRequest("Invalid request: 'input': the conversation is empty.")
    return ChatRequest(
        turns=turns,
        sampling=SamplingParams(
            temperature=DEFAULT_TEMPERATURE if data.temperature is None else data.temperature,
            top_p=DEFAULT_TOP_P if data.top_p is None else data.top_p,
            top_k=0,
            repetition_penalty=1.0,
        ),
        max_tokens=data.max_output_tokens,
        model=models.resolve(data.model),
        tools=plan,
        stop=data.stop_strings(),
        json_schema=response_schema(data.text.format if data.text else None),
    )


def input_items(data: ResponseRequest, lookup: Lookup) -> list[InputItem]:
    """``input`` as items: a string is one user message; item references are resolved."""
    if data.input is None:
        return []
    if isinstance(data.input, str):
        return [InputItem(type="message", role="user", content=data.input)]
    out = []
    for i, item in enumerate(data.input):
        if item.type == "item_reference":
            found = lookup(item.id or "")
            if found is None:
                raise InvalidRequest(
                    f"Invalid request: 'input[{i}]': no stored item has id "
                    f"{(item.id or '')[:64]!r} (only responses created with store: true "
                    "are kept, in memory)."
                )
            item = found
        out.append(item)
    return out


# ----- the conversation ----------------------------------------------------------------------

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


def _text(content: str | Sequence[ContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type in _TEXT_PARTS:
            texts.append(part.text or "")
        elif part.type == "refusal":
            texts.append(part.refusal or "")
        else:
            raise InvalidRequest(
                f"Invalid request: '{where}': content parts of type {part.type[:40]!r} are not "
                "supported; this server reads text only (no images or files yet)."
            )
    return "".join(texts)


def _arguments(item: InputItem) -> str | Mapping[str, Any]:
    return item.arguments if item.arguments is not None else "{}"


def turns_of(items: Sequence[InputItem], names: ToolNames) -> list[Turn]:
    """Input items as turns: calls join the assistant turn before them (or start one),
    a reasoning item's text goes with the next assistant turn, outputs are tool turns."""
    turns: list[Turn] = []
    reasoning: list[str] = []
    calls: dict[str, str] = {}  # call_id -> the model's name for the tool
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.type or "message"
        if kind == "message":
            role = item.role or "user"
            role = "system" if role == "developer" else role
            text = _text(item.content, f"{where}.content")
            if role == "assistant":
                turns.append(Turn(role, text, reasoning="".join(reasoning) or None))
                reasoning = []
            else:
                turns.append(Turn(role, text))
        elif kind in ("function_call", "custom_tool_call"):
            name = names.model_name(item.name or "", item.namespace)
            if kind == "function_call":
                arguments: str | Mapping[str, Any] = _arguments(item)
            else:
                arguments = json.dumps({CUSTOM_INPUT: item.input or ""})
            call_id = item.call_id or item.id or f"call_{i}"
            calls[call_id] = name
            call = CallMade(call_id, name, arguments)
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant":
                turns[-1] = Turn(
                    "assistant",
                    last.content,
                    (*last.tool_calls, call),
                    last.reasoning,
                )
            else:
                turns.append(Turn("assistant", None, (call,), reasoning="".join(reasoning) or None))
                reasoning = []
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.call_id or ""
            output = _text(item.output, f"{where}.output")
            turns.append(Turn("tool", output, tool_call_id=call_id, name=calls.get(call_id)))
        elif kind == "reasoning":
            # The thinking itself where the client kept it, else its summary.
            text = _text(item.content, f"{where}.content") or "".join(
                part.text or "" for part in item.summary or ()
            )
            if text:
                reasoning.append(text)
        else:
            raise InvalidRequest(
                f"Invalid request: '{where}.type': input items of type {kind[:40]!r} are not "
                "supported here."
            )
    return turns
