"""Serving's neutral answer (serving/events.py) as Ollama's chunks: NDJSON lines, or one body.

Each text or reasoning delta is a chunk (``message.content`` / ``message.thinking`` for
/api/chat, ``response`` / ``thinking`` for /api/generate); a tool call is one chunk with
``message.tool_calls`` (its arguments as an object) once it is whole. The last chunk has
``done: true``, ``done_reason`` and the counts and durations, in nanoseconds, measured:

* ``total_duration``: from the request's arrival until the answer ended;
* ``load_duration``: the model load this request caused (0 when it was loaded already);
* ``prompt_eval_duration``: the engine's, from the sequence getting a slot until its prompt
  was computed; ``eval_duration``: from then until the sequence ended;
* ``prompt_eval_count``: the prompt's tokens (those reused from the cache included, as
  usage counts them everywhere here); ``eval_count``: the tokens generated.

A call ends the answer with ``done_reason`` "stop", as Ollama does. A failure after the
stream began ends it with a line ``{"error": "..."}``, which Ollama's clients raise.
``model`` echoes the name the client sent (``gemma-3-270m:latest``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime

from locallab_cpp.api.ollama import chat_protocol as p
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.ndjson import ndjson_line
from locallab_cpp.serving.chat import ChatRun
from locallab_cpp.serving.events import (
    Answer,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
)


def created_at() -> str:
    """Now, RFC 3339 in UTC (``2025-10-17T23:14:07.414671Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Timing:
    """The request's clock: when it arrived and what its model load took."""

    started_ns: int = field(default_factory=time.perf_counter_ns)
    load_ns: int = 0


@dataclass(frozen=True, slots=True)
class Shape:
    """Which answer it is, under which model name, with reasoning shown or not."""

    model: str
    chat: bool
    show_thinking: bool = True

    def chunk(
        self,
        content: str = "",
        thinking: str | None = None,
        calls: list[p.ToolCallOut] | None = None,
        *,
        done: bool = False,
    ) -> p.ChatChunk | p.GenerateChunk:
        """A chunk holding this text, reasoning or calls."""
        thinking = thinking or None
        if self.chat:
            message = p.MessageOut(
                role="assistant", content=content, thinking=thinking, tool_calls=calls
            )
            return p.ChatChunk(
                model=self.model, created_at=created_at(), done=done, message=message
            )
        return p.GenerateChunk(
            model=self.model,
            created_at=created_at(),
            done=done,
            response=content,
            thinking=thinking,
        )

    def loaded(self, reason: p.DoneReason) -> p.ChatChunk | p.GenerateChunk:
        """The answer to an empty prompt: the model was loaded, or unloaded."""
        out = self.chunk(done=True)
        out.done_reason = reason
        return out

    def final(
        self, out: p.ChatChunk | p.GenerateChunk, finished: ChoiceFinished, timing: Timing
    ) -> p.ChatChunk | p.GenerateChunk:
        """``out`` as the last chunk: how the answer ended, its counts and durations."""
        out.done = True
        out.done_reason = "length" if finished.reason == "length" else "stop"
        out.total_duration = time.perf_counter_ns() - timing.started_ns
        out.load_duration = timing.load_ns
        out.prompt_eval_count = finished.prompt_tokens
        out.prompt_eval_duration = round(finished.prompt_seconds * 1e9)
        out.eval_count = finished.completion_tokens
        out.eval_duration = round(finished.generation_seconds * 1e9)
        return out


def arguments_object(arguments: str) -> dict[str, object]:
    """A call's arguments (JSON text that serving checked is an object) as an object."""
    parsed = json.loads(arguments) if arguments.strip() else {}
    return parsed if isinstance(parsed, dict) else {}


def answer_body(shape: Shape, answer: Answer, timing: Timing) -> p.ChatChunk | p.GenerateChunk:
    """A whole answer (``stream: false``) as one body."""
    calls = [
        p.ToolCallOut(
            id=call.id,
            function=p.CallFunctionOut(
                index=i, name=call.name, arguments=arguments_object(call.arguments)
            ),
        )
        for i, call in enumerate(answer.tool_calls)
    ]
    out = shape.chunk(
        answer.text,
        answer.reasoning if shape.show_thinking else None,
        calls or None,
    )
    return shape.final(out, answer.finished, timing)


async def answer_lines(shape: Shape, run: ChatRun, timing: Timing) -> AsyncIterator[bytes]:
    """A streamed answer (one choice) as NDJSON lines."""
    names: dict[int, tuple[str, str]] = {}
    args: dict[int, list[str]] = {}
    try:
        async with aclosing(run.events()) as events:
            async for _, event in events:
                if isinstance(event, TextDelta):
                    if event.text:
                        yield ndjson_line(shape.chunk(event.text))
                elif isinstance(event, ReasoningDelta):
                    if shape.show_thinking and event.text:
                        yield ndjson_line(shape.chunk(thinking=event.text))
                elif isinstance(event, ToolCallStart):
                    names[event.index] = (event.id, event.name)
                    args[event.index] = []
                elif isinstance(event, ToolCallArgs):
                    args[event.index].append(event.fragment)
                elif isinstance(event, ToolCallEnd):
                    call_id, name = names[event.index]
                    function = p.CallFunctionOut(
                        index=event.index,
                        name=name,
                        arguments=arguments_object("".join(args[event.index])),
                    )
                    call = p.ToolCallOut(id=call_id, function=function)
                    yield ndjson_line(shape.chunk(calls=[call]))
                elif isinstance(event, ChoiceFinished):
                    yield ndjson_line(shape.final(shape.chunk(), event, timing))
    except LocalLabError as exc:
        yield ndjson_line({"error": Problem.from_error(exc).detail})
