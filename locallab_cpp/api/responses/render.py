"""Serving's answers in the Responses API's shapes: output items, usage, the response
object (whole here; streamed in stream.py from the same pieces)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import msgspec

from locallab_cpp.api.responses.objects import (
    CustomToolCallItem,
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    ItemStatus,
    MessageItem,
    OutputItem,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
)
from locallab_cpp.api.responses.protocol import ResponseRequest
from locallab_cpp.api.responses.translate import CUSTOM_INPUT, ToolNames
from locallab_cpp.serving.events import Answer, CallOut, ChoiceFinished
from locallab_cpp.serving.generation import TokenUsage


def new_id(prefix: str) -> str:
    """An id such as ``resp_...`` or ``msg_...`` (OpenAI's ids join with "_")."""
    return f"{prefix}_{uuid.uuid4().hex}"


def base_response(data: ResponseRequest, response_id: str, model: str) -> ResponseObject:
    """The response as it starts: in progress, no output, the request's settings echoed."""
    tool_choice: Any = data.tool_choice if data.tool_choice is not None else "auto"
    return ResponseObject(
        id=response_id,
        created_at=int(time.time()),
        status="in_progress",
        model=model,
        output=[],
        instructions=data.instructions,
        max_output_tokens=data.max_output_tokens,
        previous_response_id=data.previous_response_id,
        parallel_tool_calls=data.parallel_tool_calls is not False,
        tool_choice=msgspec.to_builtins(tool_choice),
        tools=msgspec.to_builtins(data.tools or []),
        temperature=1.0 if data.temperature is None else data.temperature,
        top_p=1.0 if data.top_p is None else data.top_p,
        text=msgspec.to_builtins(data.text) if data.text else {"format": {"type": "text"}},
        reasoning=msgspec.to_builtins(data.reasoning) if data.reasoning else None,
        store=bool(data.store),
        truncation=data.truncation or "disabled",
        metadata=data.metadata or {},
        user=data.user,
        prompt_cache_key=data.prompt_cache_key,
    )


def usage_of(totals: TokenUsage, reasoning_tokens: int) -> ResponseUsage:
    """Serving's token counts in the Responses shape."""
    return ResponseUsage(
        input_tokens=totals.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=totals.cached_prompt_tokens),
        output_tokens=totals.completion_tokens,
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=min(reasoning_tokens, totals.completion_tokens)
        ),
        total_tokens=totals.total_tokens,
    )


def custom_input(arguments: str) -> str:
    """A custom tool's text from the arguments of the function it was offered as."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments


def call_item(call: CallOut, names: ToolNames) -> FunctionCallItem | CustomToolCallItem:
    """A model's call as the client's tool call item (custom, namespaced or plain)."""
    tool = names.client(call.name)
    item_id = new_id("fc" if tool.kind == "function" else "ctc")
    if tool.kind == "custom":
        return CustomToolCallItem(
            id=item_id,
            call_id=call.id,
            name=tool.name,
            input=custom_input(call.arguments),
            namespace=tool.namespace,
        )
    return FunctionCallItem(
        id=item_id,
        call_id=call.id,
        name=tool.name,
        arguments=call.arguments,
        namespace=tool.namespace,
    )


def output_items(answer: Answer, names: ToolNames) -> list[OutputItem]:
    """A whole answer's items: reasoning, the message (unless only calls and blank
    text), then each call."""
    items: list[OutputItem] = []
    status = item_status(answer.finished)
    if answer.reasoning:
        items.append(
            ReasoningItem(
                id=new_id("rs"), summary=[], content=[ReasoningText(text=answer.reasoning)]
            )
        )
    if answer.text.strip() or not answer.tool_calls:
        items.append(
            MessageItem(id=new_id("msg"), status=status, content=[OutputText(text=answer.text)])
        )
    items += [call_item(call, names) for call in answer.tool_calls]
    return items


def item_status(finished: ChoiceFinished) -> ItemStatus:
    """A message's status: cut short by the token limit is "incomplete"."""
    return "incomplete" if finished.reason == "length" else "completed"


def finish(
    response: ResponseObject,
    items: list[OutputItem],
    finished: ChoiceFinished,
    usage: ResponseUsage,
) -> ResponseObject:
    """The response once its answer ended: completed, or incomplete at the token limit."""
    response.output = items
    response.output_text = "".join(
        part.text for item in items if isinstance(item, MessageItem) for part in item.content
    )
    response.usage = usage
    if finished.reason == "length":
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
    else:
        response.status = "completed"
    return response
