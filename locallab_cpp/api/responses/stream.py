"""A streamed response: serving's neutral events as the Responses API's SSE events.

Every event is named (``event: response.output_text.delta``) and numbered
(``sequence_number``), in OpenAI's order: ``response.created`` and
``response.in_progress`` first, sent before the prompt is computed so a client waiting on
a long prompt sees the response begin; then per output item ``output_item.added``, its
content part and deltas, their ``.done`` events and ``output_item.done``; last
``response.completed``, ``response.incomplete`` or ``response.failed`` (a prompt too long
for the context is a failed response with code ``context_length_exceeded``, which Codex
handles by compacting). A stream always ends with one of those three.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import msgspec

from locallab_cpp.api.openai.errors import OPENAI_ERRORS, error_object
from locallab_cpp.api.responses.objects import (
    MessageItem,
    OutputItem,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseError,
    ResponseObject,
)
from locallab_cpp.api.responses.render import call_item, finish, item_status, new_id, usage_of
from locallab_cpp.api.responses.translate import ToolNames
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.sse import data_event
from locallab_cpp.serving.chat import ChatRun
from locallab_cpp.serving.events import (
    AnswerEvent,
    CallOut,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
)

logger = logging.getLogger("locallab_cpp")
_encoder = msgspec.json.Encoder()


def error_of(exc: LocalLabError) -> ResponseError:
    """A failed response's ``error``: OpenAI's code for the error's kind."""
    problem = Problem.from_error(exc)
    code = error_object(problem, OPENAI_ERRORS.status(problem.kind))["code"]
    if code is None:
        code = "server_error" if OPENAI_ERRORS.status(problem.kind) >= 500 else "invalid_request"
    return ResponseError(code=code, message=problem.detail)


class ResponseEvents:
    """The events of one streamed response, numbered as they are made."""

    def __init__(self, response: ResponseObject, names: ToolNames) -> None:
        self.response = response
        self.names = names
        self.items: list[OutputItem] = []
        self._seq = 0
        self._open: MessageItem | ReasoningItem | None = None
        self._text = ""  # the open item's text so far
        self._blank = ""  # blank text not yet sent: it may only precede calls
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self.finished: ChoiceFinished | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return data_event(_encoder.encode(payload).decode(), event=kind)

    def lifecycle(self, kind: str) -> bytes:
        return self.event(kind, response=self.response)

    def feed(self, event: AnswerEvent) -> list[bytes]:
        """The SSE events one neutral event makes (none while a call is assembling)."""
        if isinstance(event, ReasoningDelta):
            out = self._ensure("reasoning")
            self._text += event.text
            index = len(self.items) - 1
            assert self._open is not None
            return [
                *out,
                self.event(
                    "response.reasoning_text.delta",
                    item_id=self._open.id,
                    output_index=index,
                    content_index=0,
                    delta=event.text,
                ),
            ]
        if isinstance(event, TextDelta):
            return self._text_delta(event.text)
        if isinstance(event, ToolCallStart):
            self._calls[event.index] = (event.id, event.name, [])
            return self._close()
        if isinstance(event, ToolCallArgs):
            self._calls[event.index][2].append(event.fragment)
            return []
        if isinstance(event, ToolCallEnd):
            call_id, name, parts = self._calls.pop(event.index)
            return self._call(CallOut(call_id, name, "".join(parts)))
        self.finished = event
        return self._close()

    def _text_delta(self, text: str) -> list[bytes]:
        if not text:
            return []
        if not isinstance(self._open, MessageItem):
            if not text.strip():
                self._blank += text  # whitespace before a call is no message
                return []
            text, self._blank = self._blank + text, ""
        out = self._ensure("message")
        self._text += text
        assert self._open is not None
        return [
            *out,
            self.event(
                "response.output_text.delta",
                item_id=self._open.id,
                output_index=len(self.items) - 1,
                content_index=0,
                delta=text,
                logprobs=[],
            ),
        ]

    def _ensure(self, kind: str) -> list[bytes]:
        if kind == "message" and isinstance(self._open, MessageItem):
            return []
        if kind == "reasoning" and isinstance(self._open, ReasoningItem):
            return []
        out = self._close()
        item: MessageItem | ReasoningItem
        if kind == "message":
            item = MessageItem(id=new_id("msg"), status="in_progress", content=[])
            part: OutputText | ReasoningText = OutputText(text="")
        else:
            item = ReasoningItem(id=new_id("rs"), summary=[], content=[], status="in_progress")
            part = ReasoningText(text="")
        index = len(self.items)
        self.items.append(item)
        self._open, self._text = item, ""
        out.append(self.event("response.output_item.added", output_index=index, item=item))
        out.append(
            self.event(
                "response.content_part.added",
                item_id=item.id,
                output_index=index,
                content_index=0,
                part=part,
            )
        )
        return out

    def _close(self) -> list[bytes]:
        item, text = self._open, self._text
        if item is None:
            return []
        self._open = None
        index = len(self.items) - 1
        where = {"item_id": item.id, "output_index": index, "content_index": 0}
        if isinstance(item, MessageItem):
            part: OutputText | ReasoningText = OutputText(text=text)
            done = self.event("response.output_text.done", **where, text=text, logprobs=[])
            closed: OutputItem = MessageItem(
                id=item.id,
                status=item_status(self.finished) if self.finished else "completed",
                content=[OutputText(text=text)],
            )
        else:
            part = ReasoningText(text=text)
            done = self.event("response.reasoning_text.done", **where, text=text)
            closed = ReasoningItem(id=item.id, summary=[], content=[part])
        self.items[index] = closed
        return [
            done,
            self.event("response.content_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=index, item=closed),
        ]

    def _call(self, call: CallOut) -> list[bytes]:
        item = call_item(call, self.names)
        index = len(self.items)
        self.items.append(item)
        where = {"item_id": item.id, "output_index": index}
        opened = msgspec.structs.replace(item, status="in_progress")
        if hasattr(item, "arguments"):
            opened = msgspec.structs.replace(opened, arguments="")
            name, value, field = "response.function_call_arguments", item.arguments, "arguments"
        else:
            opened = msgspec.structs.replace(opened, input="")
            name, value, field = "response.custom_tool_call_input", item.input, "input"
        return [
            self.event("response.output_item.added", output_index=index, item=opened),
            self.event(f"{name}.delta", **where, delta=value),
            self.event(f"{name}.done", **where, **{field: value}),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def failed(self, exc: LocalLabError) -> bytes:
        self.response.status = "failed"
        self.response.error = error_of(exc)
        self.response.output = self.items
        return self.lifecycle("response.failed")


async def response_events(
    events: ResponseEvents,
    start: Callable[[], Awaitable[ChatRun]],
    count_tokens: Callable[[str], int],
    done: Callable[[ResponseObject], None],
) -> AsyncIterator[bytes]:
    """The whole stream: the start events at once, then ``start()`` (which computes the
    prompt), the answer's events, the last lifecycle event; ``done`` gets the response
    when it completed or is incomplete (to store it)."""
    yield events.lifecycle("response.created")
    yield events.lifecycle("response.in_progress")
    try:
        run = await start()
        events.response.model = run.model
        reasoning: list[str] = []
        async with aclosing(run.events()) as answer:
            async for _, event in answer:
                if isinstance(event, ReasoningDelta):
                    reasoning.append(event.text)
                for chunk in events.feed(event):
                    yield chunk
        assert events.finished is not None
        usage = usage_of(run.usage(), count_tokens("".join(reasoning)) if reasoning else 0)
        response = finish(events.response, events.items, events.finished, usage)
    except LocalLabError as exc:
        yield events.failed(exc)
        return
    except Exception:
        logger.exception("a responses stream failed")
        yield events.failed(LocalLabError())
        return
    done(response)
    kind = "response.completed" if response.status == "completed" else "response.incomplete"
    yield events.lifecycle(kind)
