"""Tool calls in generated text: each model family's format, read whole or streamed, a
grammar that forces calls, and a check of call arguments against a tool's schema.

No llama_cpp or web-framework import happens here: grammars are converted by
:mod:`locallab_cpp.engine.schema`, which imports llama_cpp only when called.

Use: ``fmt = tool_format_for(chat_prompt.tool_format)``; ``fmt.parse(text)`` for a whole
generation, ``fmt.streamer()`` (``feed``/``finish``) while streaming, and
``fmt.grammar(tools, name, parallel)`` for ``tool_choice`` "required" or a named tool;
``plan_tools(tools, choice)`` for what a request's tools ask (toolcalls/plan.py). Split
reasoning (:mod:`locallab_cpp.serving.reasoning`) off first: calls are read in the content.
"""

from __future__ import annotations

from locallab_cpp.serving.toolcalls.calls import ParsedToolCall, ToolCallDelta, new_call_id
from locallab_cpp.serving.toolcalls.formats import (
    FORMATS,
    HermesFormat,
    Llama3Format,
    MistralFormat,
    ToolCallFormat,
    tool_format_for,
)
from locallab_cpp.serving.toolcalls.plan import (
    NamedTool,
    ToolChoice,
    ToolDef,
    ToolPlan,
    check_parameters,
    plan_tools,
)
from locallab_cpp.serving.toolcalls.streamer import CallRecord, ToolCallStreamer
from locallab_cpp.serving.toolcalls.validate import schema_problem, validate_arguments

__all__ = [
    "FORMATS",
    "CallRecord",
    "HermesFormat",
    "Llama3Format",
    "MistralFormat",
    "NamedTool",
    "ParsedToolCall",
    "ToolCallDelta",
    "ToolCallFormat",
    "ToolCallStreamer",
    "ToolChoice",
    "ToolDef",
    "ToolPlan",
    "check_parameters",
    "new_call_id",
    "plan_tools",
    "schema_problem",
    "tool_format_for",
    "validate_arguments",
]
