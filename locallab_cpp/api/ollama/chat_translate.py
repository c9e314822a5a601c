"""Ollama's chat and generate requests in serving's terms (serving/chat.py does the rest,
for every API alike: rendering, tool planning, grammar, reasoning split, limits).

* ``messages``: system, user, assistant and tool turns as they are. An assistant turn's
  ``tool_calls`` carry their arguments as an object (JSON text is read too); a call without
  an ``id`` gets one. A ``tool`` turn names its tool in ``tool_name``; without a
  ``tool_call_id`` it answers the earliest unanswered call of the turn before with that
  name (else the earliest unanswered one), which is how Ollama's clients pair them.
* ``tools``: offered to the model; it calls them when it chooses (Ollama has no
  tool_choice). Calls come back with their arguments as an object.
* ``format``: ``"json"`` is any JSON object, a schema is the grammar of the answer, through
  the same bounded schema path as every API.
* ``think``: true or an effort level reports leading ``<think>`` reasoning in ``thinking``
  (no template here takes an effort, so the level changes nothing else); absent, reasoning
  a model writes is reported apart too. False: no template here has a switch that stops a
  model from reasoning, so a model that reasons anyway has its reasoning dropped from the
  answer (neither in ``thinking`` nor in ``content``), which is what a client that turned
  thinking off shows its user.
* ``images`` anywhere: 400, this server has no vision yet.
* /api/generate: ``prompt`` (with ``system`` as a system turn) is one user turn through the
  chat template, as Ollama does; ``raw: true`` sends the prompt as it is (tokenized text, as
  /v1/completions does), ``suffix`` asks for fill-in-the-middle with the model's FIM tokens
  (400 without them). ``system`` with ``raw`` or ``suffix`` cannot be honoured (no template
  places it) and ``template`` never can (this server renders with the GGUF's template): 400
  with what to do. ``context`` is accepted and ignored: prompt reuse needs none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from locallab_cpp.api.ollama.chat_options import Settings
from locallab_cpp.api.ollama.chat_protocol import ChatBody, ChatMessage, GenerateBody, ToolCallIn
from locallab_cpp.engine.schema import JSON_OBJECT_SCHEMA
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving.chat import ChatRequest
from locallab_cpp.serving.tools import ToolDef, ToolPlan, new_call_id, plan_tools
from locallab_cpp.serving.turns import CallMade, Turn

VISION = "vision is not supported yet: this server reads text only; send the message without images"


@dataclass(frozen=True, slots=True)
class Thinking:
    """What ``think`` asks: split reasoning off, and show it in ``thinking``."""

    split: bool = True
    show: bool = True


def thinking_of(think: bool | str | None) -> Thinking:
    """``think`` as what to do with reasoning (see the module's docstring)."""
    if think is False:
        return Thinking(split=True, show=False)
    return Thinking()


def json_schema_of(fmt: str | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``format`` as the answer's JSON schema; None for no format."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return JSON_OBJECT_SCHEMA
    if isinstance(fmt, Mapping):
        return fmt
    raise InvalidRequest(  # the protocol's types admit nothing else; kept for safety
        "Invalid request: 'format': send \"json\" or a JSON schema object."
    )


def chat_request(data: ChatBody, model_id: str, settings: Settings) -> ChatRequest:
    """/api/chat in serving's terms; 400 for what this server cannot honour."""
    return ChatRequest(
        turns=turns_of(data.messages or []),
        sampling=settings.sampling,
        max_tokens=settings.max_tokens,
        model=model_id,
        tools=plan_of(data),
        stop=settings.stop,
        json_schema=json_schema_of(data.format),
        split_reasoning=thinking_of(data.think).split,
    )


def generate_request(data: GenerateBody, model_id: str, settings: Settings) -> ChatRequest:
    """/api/generate without ``raw`` or ``suffix``: the prompt as one user turn (after
    ``system``, if any) through the chat template."""
    check_generate(data)
    turns = [Turn("system", data.system)] if data.system else []
    turns.append(Turn("user", data.prompt or ""))
    return ChatRequest(
        turns=turns,
        sampling=settings.sampling,
        max_tokens=settings.max_tokens,
        model=model_id,
        stop=settings.stop,
        json_schema=json_schema_of(data.format),
        split_reasoning=thinking_of(data.think).split,
    )


def check_generate(data: GenerateBody) -> None:
    """400 for the /api/generate fields this server cannot honour."""
    if data.images:
        raise InvalidRequest(f"Invalid request: 'images': {VISION}.")
    if data.template:
        raise InvalidRequest(
            "Invalid request: 'template': a template override is not supported; this "
            "server renders prompts with the model's own chat template. Leave template out, "
            "or render the prompt yourself and send it with raw: true."
        )
    if data.system and (data.raw or data.suffix is not None):
        field = "raw" if data.raw else "suffix"
        raise InvalidRequest(
            f"Invalid request: 'system': a system prompt cannot be honoured with {field}, "
            "which uses no chat template; put it in the prompt yourself, or leave "
            f"{field} out."
        )


def plan_of(data: ChatBody) -> ToolPlan:
    """``tools`` as serving's tool plan (auto: the model calls them when it chooses)."""
    tools = [
        ToolDef(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters,
            where=f"tools[{i}].function.parameters",
        )
        for i, tool in enumerate(data.tools or ())
    ]
    return plan_tools(tools)


# ----- the conversation ----------------------------------------------------------------------


def turns_of(messages: list[ChatMessage]) -> list[Turn]:
    """``messages`` as turns (see the module's docstring)."""
    turns: list[Turn] = []
    pending: list[CallMade] = []
    """The calls of the last assistant turn that no tool turn answered yet."""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.images:
            raise InvalidRequest(f"Invalid request: '{where}.images': {VISION}.")
        if message.role == "assistant":
            calls = tuple(
                _call(call, f"{where}.tool_calls[{j}]")
                for j, call in enumerate(message.tool_calls or ())
            )
            pending = list(calls)
            turns.append(
                Turn(
                    "assistant",
                    message.content or "",
                    tool_calls=calls,
                    reasoning=message.thinking or None,
                )
            )
        elif message.role == "tool":
            name = message.tool_name or message.name
            call = _answered(pending, message.tool_call_id, name)
            turns.append(
                Turn(
                    "tool",
                    message.content or "",
                    tool_call_id=message.tool_call_id or (call.id if call else None),
                    name=name or (call.name if call else None),
                )
            )
        else:
            turns.append(Turn(message.role, message.content or ""))
    return turns


def _call(call: ToolCallIn, where: str) -> CallMade:
    arguments: Any = call.function.arguments
    if arguments is None:
        arguments = {}
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise InvalidRequest(
                f"Invalid request: '{where}.function.arguments': not a JSON object; send the "
                "arguments as an object."
            ) from None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"Invalid request: '{where}.function.arguments': send the arguments as an object."
            )
    return CallMade(call.id or new_call_id(), call.function.name, arguments)


def _answered(pending: list[CallMade], call_id: str | None, name: str | None) -> CallMade | None:
    """The call a tool turn answers, taken off ``pending``."""
    for match in (
        lambda c: call_id is not None and c.id == call_id,
        lambda c: call_id is None and name is not None and c.name == name,
        lambda c: call_id is None,
    ):
        for k, call in enumerate(pending):
            if match(call):
                return pending.pop(k)
    return None
