"""Anthropic's Messages request in serving's terms: ``system`` and ``messages`` as turns,
``tools`` and ``tool_choice`` as a tool plan, its sampling fields and limits (serving/chat.py
does the rest, for every API alike).

What the conversation becomes, block by block:

* ``system`` (a string or text blocks) and any ``system`` turns before the first user or
  assistant turn are one system turn, their texts joined by blank lines. A ``system`` turn
  later in ``messages`` (Claude Code puts its environment there, after the user's prompt)
  joins the user text around it: many templates (Gemma's) take one leading system message
  only, and folding it into the first one would change the start of the prompt whenever a
  client adds one, which defeats prompt reuse.
* text blocks are text; consecutive user texts are one user turn (Anthropic merges
  consecutive user messages too); a ``search_result`` is its title and text.
* ``tool_use`` blocks are the assistant turn's calls (``input`` as the arguments object),
  ``thinking`` its reasoning; ``redacted_thinking`` has no text and is dropped.
* each ``tool_result`` is a "tool" turn answering its call; a failed one (``is_error``)
  starts with "Error: " so the model sees that the call failed. A ``tool_reference`` (Claude
  Code's ToolSearch loads deferred tools so) reads "Tool loaded: NAME".
* ``tool_addition`` / ``tool_removal`` blocks are ignored: every client tool in ``tools``
  is offered from the start.
* images and documents are refused with a 400: this server has no vision.

``cache_control`` is ignored everywhere: the engine reuses a prompt's longest cached prefix
by itself. ``thinking`` changes nothing: reasoning a model writes (``<think>``) is always
reported apart, as thinking blocks, and no template here has a switch that forces or
suppresses it.
"""

from __future__ import annotations

import logging

from locallab_cpp.api.anthropic.protocol import (
    ContentBlock,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ToolAdditionBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolReferenceBlock,
    ToolRemovalBlock,
    ToolResultBlock,
    ToolUseBlock,
    request_problem,
)
from locallab_cpp.engine.types import SamplingParams
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import ChatRequest
from locallab_cpp.serving.tools import NamedTool, ToolChoice, ToolDef, ToolPlan, plan_tools
from locallab_cpp.serving.turns import CallMade, Turn

logger = logging.getLogger("locallab_cpp")

ERROR_PREFIX = "Error: "
"""Starts the text of a tool result the client marked ``is_error``."""

# Anthropic's defaults: temperature 1, top_p and top_k off.
DEFAULT_TEMPERATURE = 1.0


def chat_request(data: MessagesRequest, models: ModelManager) -> ChatRequest:
    """The request in serving's terms; 400 for what this server cannot honour."""
    check(data)
    return ChatRequest(
        turns=turns_of(data),
        sampling=SamplingParams(
            temperature=DEFAULT_TEMPERATURE if data.temperature is None else data.temperature,
            top_p=1.0 if data.top_p is None else data.top_p,
            top_k=data.top_k or 0,
        ),
        # A ceiling ("may stop before"): the engine ends a sequence where its context ends,
        # with stop_reason max_tokens, so a large value (Claude Code's 32000) is never a 400.
        max_tokens=data.max_tokens,
        model=models.resolve(data.model),
        tools=plan_of(data),
        stop=tuple(data.stop_sequences or ()),
    )


def check(data: CountTokensRequest) -> None:
    """400 for a request its types accept but its fields together do not."""
    problem = request_problem(data)
    if problem is not None:
        raise InvalidRequest(f"Invalid request: {problem}.")


def plan_of(data: CountTokensRequest) -> ToolPlan:
    """``tools`` and ``tool_choice`` as serving's tool plan. Server tools (a ``type`` such
    as ``web_search_20250305``) are Anthropic's to run; they are left out of the prompt."""
    tools: list[ToolDef] = []
    for i, tool in enumerate(data.tools or ()):
        if tool.is_server_tool:
            logger.info("server tool %r (%s) left out: this server runs none", tool.name, tool.type)
            continue
        tools.append(
            ToolDef(
                name=tool.name,
                description=tool.description,
                parameters=tool.input_schema,
                where=f"tools[{i}].input_schema",
            )
        )
    given = data.tool_choice
    choice: ToolChoice | None = None
    if isinstance(given, ToolChoiceAny):
        choice = "required"
    elif isinstance(given, ToolChoiceTool):
        choice = NamedTool(given.name)
    elif isinstance(given, ToolChoiceNone):
        choice = "none"
    serial = bool(getattr(given, "disable_parallel_tool_use", False))
    return plan_tools(tools, choice, parallel=not serial)


# ----- the conversation ----------------------------------------------------------------------


def turns_of(data: CountTokensRequest) -> list[Turn]:
    """``system`` and ``messages`` as turns (see the module's docstring)."""
    system = [block.text for block in data.system_blocks()]
    turns: list[Turn] = []
    names: dict[str, str] = {}
    """The function of each call id, for the tool turns (some templates print it)."""
    for i, message in enumerate(data.messages):
        where = f"messages[{i}]"
        if message.role == "system":
            text = _plain_text(message, where)
            if not turns:
                system.append(text)
            else:
                _add_user_text(turns, text)
        elif message.role == "assistant":
            turns.append(_assistant_turn(message, where, names))
        else:
            _add_user_blocks(turns, message, where, names)
    texts = [text for text in system if text]
    return [Turn("system", "\n\n".join(texts)), *turns] if texts else turns


def _refuse(block: ContentBlock, where: str) -> InvalidRequest:
    if isinstance(block, ImageBlock | DocumentBlock):
        kind = "image" if isinstance(block, ImageBlock) else "document"
        return InvalidRequest(
            f"Invalid request: '{where}': {kind} blocks are not supported: vision is not "
            "supported by this server, which reads text only."
        )
    return InvalidRequest(
        f"Invalid request: '{where}': a {block.__struct_config__.tag} block cannot be in "
        "this message."
    )


def _text_of(block: ContentBlock, where: str) -> str | None:
    """The text a block shows the model; None for blocks that show nothing (tool changes)."""
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, SearchResultBlock):
        body = "\n".join(part.text for part in block.content or ())
        return "\n".join(part for part in (block.title, body) if part)
    if isinstance(block, ToolReferenceBlock):
        return f"Tool loaded: {block.tool_name or block.name or ''}"
    if isinstance(block, ToolAdditionBlock | ToolRemovalBlock):
        return None
    raise _refuse(block, where)


def _plain_text(message: MessageParam, where: str) -> str:
    """A system turn's text (text blocks only, tool changes ignored)."""
    texts = (_text_of(b, f"{where}.content[{j}]") for j, b in enumerate(message.blocks()))
    return "\n\n".join(text for text in texts if text is not None)


def _add_user_text(turns: list[Turn], text: str) -> None:
    if turns and turns[-1].role == "user":
        turns[-1] = Turn("user", f"{turns[-1].content}\n\n{text}")
    else:
        turns.append(Turn("user", text))


def _add_user_blocks(
    turns: list[Turn], message: MessageParam, where: str, names: dict[str, str]
) -> None:
    texts: list[str] = []
    for j, block in enumerate(message.blocks()):
        at = f"{where}.content[{j}]"
        if isinstance(block, ToolResultBlock):
            if texts:
                _add_user_text(turns, "\n\n".join(texts))
                texts = []
            turns.append(_tool_turn(block, at, names))
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            continue  # a user's turn has no reasoning to show
        elif (text := _text_of(block, at)) is not None:
            texts.append(text)
    if texts:
        _add_user_text(turns, "\n\n".join(texts))


def _tool_turn(block: ToolResultBlock, where: str, names: dict[str, str]) -> Turn:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = (_text_of(b, f"{where}.content[{k}]") for k, b in enumerate(content))
        text = "\n".join(part for part in parts if part is not None)
    if block.is_error:
        text = ERROR_PREFIX + text
    return Turn("tool", text, tool_call_id=block.tool_use_id, name=names.get(block.tool_use_id))


def _assistant_turn(message: MessageParam, where: str, names: dict[str, str]) -> Turn:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[CallMade] = []
    for j, block in enumerate(message.blocks()):
        if isinstance(block, ToolUseBlock):
            names[block.id] = block.name
            calls.append(CallMade(block.id, block.name, block.input or {}))
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, RedactedThinkingBlock):
            continue  # encrypted by Anthropic: nothing a model here can read
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        else:
            raise _refuse(block, f"{where}.content[{j}]")
    return Turn(
        "assistant",
        "".join(texts),
        tool_calls=tuple(calls),
        reasoning="".join(reasoning) or None,
    )
