"""Serving's neutral answer (serving/events.py) as Anthropic's message and stream events.

A whole answer is one :class:`Message`: its thinking, its text and its tool calls, in that
order. A streamed one is Anthropic's event sequence: ``message_start`` at once (the SSE
response begins before the prompt is computed, with ``ping`` every few seconds until the
first token, http/sse.py), then per content block ``content_block_start``, its deltas and
``content_block_stop``, then ``message_delta`` and ``message_stop``; an error after the
stream began is an ``error`` event with the body an error response would have.

Decisions, the same in both:

* ``model`` echoes the request's model name, as Anthropic does: clients (Claude Code)
  key their model settings and accounting on it. GET /v1/models names the model loaded.
* ``usage.input_tokens`` excludes the prompt tokens reused from the cache, which are
  ``cache_read_input_tokens`` (Anthropic's sense: the three input counts add up to the
  prompt). Nothing is "written" to a cache on purpose, so ``cache_creation_input_tokens``
  is 0. Streamed, message_start cannot know the reuse yet and says the whole prompt is
  input; message_delta repeats the three counts as they turned out.
* Text that is only whitespace before a tool call is left out (a model's newline between
  its words and its call is no answer of its own).
* A thinking block's ``signature`` is "" (nothing here signs); a ``signature_delta`` still
  closes it, as Anthropic's streams do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from locallab_cpp.api.anthropic import responses as r
from locallab_cpp.api.anthropic.errors import ANTHROPIC_ERRORS, error_body
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.sse import EventStream, event_stream, with_heartbeat
from locallab_cpp.serving.chat import ChatRun
from locallab_cpp.serving.events import (
    Answer,
    AnswerEvent,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
)

PING_EVERY_S = 5.0
"""Seconds without an event before a ``ping`` keeps the client's read timeout at bay."""


def new_message_id() -> str:
    """A message id, ``msg_`` and 24 hex digits, as Anthropic's look."""
    return "msg_" + uuid.uuid4().hex[:24]


def stop_reason(finished: ChoiceFinished) -> r.StopReason:
    """Anthropic's stop reason for how the choice ended."""
    if finished.reason == "tool_calls":
        return "tool_use"
    if finished.reason == "length":
        return "max_tokens"
    return "stop_sequence" if finished.stop_sequence is not None else "end_turn"


def usage_of(finished: ChoiceFinished) -> r.Usage:
    """The message's usage (see the module's docstring for the input counts)."""
    return r.Usage(
        input_tokens=finished.prompt_tokens - finished.cached_tokens,
        output_tokens=finished.completion_tokens,
        cache_read_input_tokens=finished.cached_tokens,
    )


def arguments_object(arguments: str) -> dict[str, object]:
    """A call's arguments (JSON text, checked by serving to be an object) as ``input``."""
    parsed = json.loads(arguments) if arguments.strip() else {}
    return parsed if isinstance(parsed, dict) else {}


def message_of(message_id: str, model: str, answer: Answer) -> r.Message:
    """A whole answer as Anthropic's message."""
    content: list[r.ResponseContent] = []
    if answer.reasoning:
        content.append(r.ThinkingContent(thinking=answer.reasoning))
    if answer.text.strip() or (answer.text and not answer.tool_calls):
        content.append(r.TextContent(text=answer.text))
    content += [
        r.ToolUseContent(id=call.id, name=call.name, input=arguments_object(call.arguments))
        for call in answer.tool_calls
    ]
    if not content:
        content.append(r.TextContent(text=""))  # clients read content[0]
    finished = answer.finished
    return r.Message(
        id=message_id,
        model=model,
        content=content,
        stop_reason=stop_reason(finished),
        stop_sequence=finished.stop_sequence,
        usage=usage_of(finished),
    )


# ----- streaming -----------------------------------------------------------------------------


@dataclass
class _Blocks:
    """The content blocks of a stream so far: which one is open, what waits to be shown."""

    count: int = 0
    open: str | None = None
    """The type of the block at index ``count - 1`` while it is open."""
    held: list[str] = field(default_factory=list)
    """Whitespace-only text not shown yet: dropped if a tool call follows."""

    def start(self, block: r.ResponseContent) -> list[r.StreamEvent]:
        out = self.stop()
        out.append(r.ContentBlockStart(index=self.count, content_block=block))
        self.open = str(block.__struct_config__.tag)
        self.count += 1
        return out

    def stop(self) -> list[r.StreamEvent]:
        if self.open is None:
            return []
        out: list[r.StreamEvent] = []
        if self.open == "thinking":
            out.append(self.delta(r.SignatureDelta(signature="")))
        out.append(r.ContentBlockStop(index=self.count - 1))
        self.open = None
        return out

    def delta(self, delta: r.Delta) -> r.ContentBlockDelta:
        return r.ContentBlockDelta(index=self.count - 1, delta=delta)

    def text(self, text: str) -> list[r.StreamEvent]:
        if self.open != "text":
            if not text.strip():
                self.held.append(text)
                return []
            text, self.held = "".join(self.held) + text, []
            out = self.start(r.TextContent(text=""))
        else:
            out = []
        return [*out, self.delta(r.TextDelta(text=text))]

    def events(self, event: AnswerEvent) -> list[r.StreamEvent]:
        """The stream events of one neutral event (ChoiceFinished closes the last block)."""
        if isinstance(event, TextDelta):
            return self.text(event.text) if event.text else []
        if isinstance(event, ReasoningDelta):
            out = [] if self.open == "thinking" else self.start(r.ThinkingContent(thinking=""))
            return [*out, self.delta(r.ThinkingDelta(thinking=event.text))]
        if isinstance(event, ToolCallStart):
            self.held = []
            return self.start(r.ToolUseContent(id=event.id, name=event.name, input={}))
        if isinstance(event, ToolCallArgs):
            return [self.delta(r.InputJsonDelta(partial_json=event.fragment))]
        if isinstance(event, ToolCallEnd):
            return self.stop()
        out = []
        if self.held:
            out += self.start(r.TextContent(text=""))
            out.append(self.delta(r.TextDelta(text="".join(self.held))))
        elif self.count == 0:
            out += self.start(r.TextContent(text=""))  # as the whole message's content[0]
        return out + self.stop()


def start_event(message_id: str, model: str, prompt_tokens: int) -> r.MessageStart:
    """message_start: the message with no content yet; the whole prompt as input."""
    usage = r.Usage(input_tokens=prompt_tokens, output_tokens=0)
    return r.MessageStart(message=r.Message(id=message_id, model=model, content=[], usage=usage))


def end_events(finished: ChoiceFinished) -> list[r.StreamEvent]:
    """message_delta (how it ended, the usage as it turned out) and message_stop."""
    usage = usage_of(finished)
    return [
        r.MessageDelta(
            delta=r.MessageDeltaBody(
                stop_reason=stop_reason(finished), stop_sequence=finished.stop_sequence
            ),
            usage=r.MessageDeltaUsage(
                output_tokens=usage.output_tokens,
                input_tokens=usage.input_tokens,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=usage.cache_read_input_tokens,
            ),
        ),
        r.MessageStop(),
    ]


def error_event(exc: LocalLabError) -> r.ErrorBody:
    """The ``error`` event of a stream that failed after it began."""
    problem = Problem.from_error(exc)
    return error_body(problem, ANTHROPIC_ERRORS.status(problem.kind))


async def message_events(run: ChatRun, message_id: str, model: str) -> AsyncIterator[bytes]:
    """The SSE events of a streamed message (one choice)."""
    yield r.sse_event(start_event(message_id, model, run.prompt_tokens))
    blocks = _Blocks()
    try:
        async with aclosing(run.events()) as events:
            async for _, event in events:
                for out in blocks.events(event):
                    yield r.sse_event(out)
                if isinstance(event, ChoiceFinished):
                    for out in end_events(event):
                        yield r.sse_event(out)
    except LocalLabError as exc:
        yield r.sse_event(error_event(exc))


def message_stream(run: ChatRun, message_id: str, model: str) -> EventStream:
    """The text/event-stream response of a streamed message, pinged while it is quiet."""
    events = message_events(run, message_id, model)
    return event_stream(with_heartbeat(events, r.sse_event(r.Ping()), PING_EVERY_S))
