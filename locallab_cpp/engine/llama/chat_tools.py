"""Tool definitions, tool calls and tool results in chat prompts.

Chat templates differ in what they know of tools: Qwen's and Llama 3.1's list the tools
and print calls and results in their own markup; Gemma's know none of it and reject a
"tool" turn. What a GGUF template shows is found out once, by rendering small probe
conversations and looking for the probe's names in the output (as llama.cpp's server does
with its templates). Whatever the template cannot show, and everything for a model that is
formatted by a llama-cpp-python format name, is written into the text turns instead, in
the Hermes convention that Qwen 2.5 and many tool-tuned models were trained on:

* the tools go into the system turn inside ``<tools></tools>``, with an instruction to
  answer calls as :data:`TOOL_CALL_OPEN` ``{"name": ..., "arguments": {...}}``
  :data:`TOOL_CALL_CLOSE`;
* an assistant turn's calls are appended to its text in that same form;
* tool results become a user turn, each result inside ``<tool_response></tool_response>``
  (consecutive results share one turn, and so does user text right after them, so user and
  assistant turns still alternate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from locallab_cpp.engine.types import ChatMessage, ToolSpec

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

Message = dict[str, Any]
RenderFn = Callable[[list[Message], list[Message] | None], str]
"""Render (messages, tools) with a template to prompt text."""


@dataclass(frozen=True, slots=True)
class TemplateCaps:
    """What a chat template shows of tools (each False: written into text turns instead)."""

    tools: bool = False
    """It lists the ``tools`` it is given."""
    tool_calls: bool = False
    """It prints an assistant turn's ``tool_calls``."""
    tool_responses: bool = False
    """It accepts and prints "tool" turns."""
    null_content: bool = False
    """It accepts content None on an assistant turn with tool calls (else it gets "")."""


PLAIN = TemplateCaps()
"""A template (or named format) that shows none of it."""

_PROBE_TOOL = "locallab_probe_tool"
_PROBE_CALL = "locallab_probe_call"
_PROBE_RESULT = "locallab_probe_result"


def _probe_call(content: str | None) -> Message:
    call = {"name": _PROBE_CALL, "arguments": {"x": 1}}
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": "call_probe", "type": "function", "function": call}],
    }


def probe(render: RenderFn) -> TemplateCaps:
    """Find out what the template behind ``render`` shows of tools."""

    def shows(marker: str, messages: list[Message], tools: list[Message] | None = None) -> bool:
        try:
            return marker in render(messages, tools)
        except Exception:  # the template rejected the probe: it does not do this
            return False

    user = {"role": "user", "content": "Hi"}
    tool = {
        "type": "function",
        "function": {"name": _PROBE_TOOL, "description": "Probe.", "parameters": {}},
    }
    tools = shows(_PROBE_TOOL, [user], [tool])
    null_content = shows(_PROBE_CALL, [user, _probe_call(None)])
    tool_calls = null_content or shows(_PROBE_CALL, [user, _probe_call("")])
    if tool_calls:
        answer = _probe_call(None if null_content else "")
    else:
        answer = {"role": "assistant", "content": "OK"}
    result = {
        "role": "tool",
        "tool_call_id": "call_probe",
        "name": _PROBE_CALL,
        "content": _PROBE_RESULT,
    }
    tool_responses = shows(_PROBE_RESULT, [user, answer, result])
    return TemplateCaps(
        tools=tools,
        tool_calls=tool_calls,
        tool_responses=tool_responses,
        null_content=null_content,
    )


def tool_format(template: str | None, caps: TemplateCaps) -> str:
    """The family of tool-call markup a model will answer in (serving/tools.py's names).

    A template that lists the tools teaches its own family's markup, told by the markers in
    its source; otherwise the tools are written as Hermes text, which asks for Hermes calls.
    """
    if not template or not caps.tools:
        return "hermes"
    if TOOL_CALL_OPEN in template:  # Qwen 2.5/3, Hermes (some on Llama 3 bases)
        return "hermes"
    if "[TOOL_CALLS]" in template:  # Mistral v0.3, Nemo, Small
        return "mistral"
    if "<|python_tag|>" in template or ('"parameters"' in template and "ipython" in template):
        return "llama3"  # Llama 3.1 prints python_tag; 3.2's asks for "parameters"
    return "hermes"


def tools_text(tools: Sequence[ToolSpec]) -> str:
    """The tools and how to call them, for a system turn (Qwen 2.5's wording)."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        f"within {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n"
        f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def call_text(call: Mapping[str, Any]) -> str:
    """One tool call as text: ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``."""
    function = call.get("function", {})
    body = {"name": function.get("name", ""), "arguments": function.get("arguments", {})}
    return f"{TOOL_CALL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"


def _object_arguments(call: Mapping[str, Any]) -> Message:
    """The call with JSON-text arguments parsed to an object, as templates expect them."""
    out = dict(call)
    function = dict(call.get("function", {}))
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    out["function"] = function
    return out


def _joined(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


def prepare(
    messages: Sequence[ChatMessage | Mapping[str, Any]],
    tools: Sequence[ToolSpec] | None,
    caps: TemplateCaps,
) -> tuple[list[Message], list[Message] | None]:
    """The messages and tools to hand a template with ``caps``: plain dicts, tool-call
    arguments as objects, and what it cannot show written into text turns."""
    out: list[Message] = []
    responses: Message | None = None  # the user turn that collects tool results
    for message in messages:
        msg: Message = dict(message)
        msg.setdefault("content", None)
        calls = [_object_arguments(c) for c in msg.pop("tool_calls", None) or ()]
        if msg["role"] == "tool" and not caps.tool_responses:
            text = f"{TOOL_RESPONSE_OPEN}\n{msg.get('content') or ''}\n{TOOL_RESPONSE_CLOSE}"
            if responses is not None and out[-1] is responses:
                responses["content"] += "\n" + text
            else:
                responses = {"role": "user", "content": text}
                out.append(responses)
            continue
        if msg["role"] == "user" and responses is not None and out[-1] is responses:
            # Text the client sent beside its tool results (Anthropic's user turns hold
            # both) joins them: two user turns in a row break templates that alternate.
            responses["content"] += "\n\n" + (msg.get("content") or "")
            continue
        if calls and caps.tool_calls:
            msg["tool_calls"] = calls
            if msg.get("content") is None and not caps.null_content:
                msg["content"] = ""
        elif calls:
            msg["content"] = _joined(msg.get("content"), *(call_text(c) for c in calls))
        elif msg.get("content") is None:
            msg["content"] = ""
        out.append(msg)
    if not tools:
        return out, None
    if caps.tools:
        return out, [dict(t) for t in tools]
    text = tools_text(tools)
    if out and out[0]["role"] == "system":
        system = out[0].get("content")
        out[0] = {**out[0], "content": f"{system}\n\n{text}" if system else text}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out, None
