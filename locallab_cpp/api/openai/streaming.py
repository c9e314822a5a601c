"""OpenAI's streamed responses: ``data: {chunk}`` events, then ``data: [DONE]``.

A chat stream renders serving's neutral events (serving/events.py: reasoning, text and
tool calls already apart and checked) as chunks, one delta each; the whole answer is the
fold of the same events (chat.py). An error after the stream began is a last data event
with OpenAI's error envelope, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

import msgspec

from locallab_cpp.api.openai.common import (
    chat_logprobs,
    completion_logprobs,
    openai_usage,
    usage_per_prompt,
)
from locallab_cpp.api.openai.errors import OPENAI_ERRORS, error_object
from locallab_cpp.api.openai.responses import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    CompletionChoice,
    FunctionDelta,
    TextCompletion,
    ToolCallDeltaOut,
)
from locallab_cpp.engine.types import Finished, GenerationHandle, TextChunk
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.sse import DONE, EventStream, event_stream
from locallab_cpp.serving.chat import ChatRun
from locallab_cpp.serving.events import (
    AnswerEvent,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallStart,
)
from locallab_cpp.serving.generation import merged_events

_encoder = msgspec.json.Encoder()


def data(payload: object) -> bytes:
    """One SSE event holding ``payload`` as compact JSON (always a single line)."""
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def error_data(exc: LocalLabError) -> bytes:
    """The last event of a failed stream: ``{"error": {...}}`` as a plain body would be."""
    problem = Problem.from_error(exc)
    return data({"error": error_object(problem, OPENAI_ERRORS.status(problem.kind))})


ChunkMaker = Callable[[list[ChatChunkChoice]], ChatCompletionChunk]


def chat_delta(event: AnswerEvent) -> ChatDelta | None:
    """The delta of one neutral event: a call's start is OpenAI's first delta (id, type,
    name, arguments ""), its arguments the next; its end and the finish have none."""
    if isinstance(event, TextDelta):
        return ChatDelta(content=event.text)
    if isinstance(event, ReasoningDelta):
        return ChatDelta(reasoning_content=event.text)
    if isinstance(event, ToolCallStart):
        function = FunctionDelta(name=event.name, arguments="")
        head = ToolCallDeltaOut(index=event.index, id=event.id, type="function", function=function)
        return ChatDelta(tool_calls=[head])
    if isinstance(event, ToolCallArgs):
        body = ToolCallDeltaOut(index=event.index, function=FunctionDelta(arguments=event.fragment))
        return ChatDelta(tool_calls=[body])
    return None


async def chat_events(
    run: ChatRun, make: ChunkMaker, *, logprobs: bool, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed chat completion: per choice a role chunk, its events'
    deltas, a last empty delta with finish_reason; usage once all ended, if asked."""
    for index in range(run.n):
        role = ChatDelta(role="assistant", content="")
        yield data(make([ChatChunkChoice(index=index, delta=role)]))
    try:
        async with aclosing(run.events()) as events:
            async for index, event in events:
                delta = chat_delta(event)
                choice: ChatChunkChoice | None = None
                if isinstance(event, ChoiceFinished):
                    choice = ChatChunkChoice(
                        index=index, delta=ChatDelta(), finish_reason=event.reason
                    )
                elif delta is not None:
                    lp = event.logprobs if isinstance(event, TextDelta) else ()
                    choice = ChatChunkChoice(
                        index=index,
                        delta=delta,
                        logprobs=chat_logprobs(lp) if logprobs and lp else None,
                    )
                if choice is not None:
                    yield data(make([choice]))
    except LocalLabError as exc:
        yield error_data(exc)
        yield DONE
        return
    if include_usage:
        usage_chunk = make([])
        usage_chunk.usage = openai_usage(run.usage())
        yield data(usage_chunk)
    yield DONE


def chat_stream(
    run: ChatRun, make: ChunkMaker, *, logprobs: bool, include_usage: bool
) -> EventStream:
    """The text/event-stream response of a streamed chat completion."""
    return event_stream(chat_events(run, make, logprobs=logprobs, include_usage=include_usage))


# ----- text completions ----------------------------------------------------------------------


async def completion_events(
    handles: Sequence[GenerationHandle],
    make: Callable[[list[CompletionChoice]], TextCompletion],
    *,
    n: int,
    echoes: Sequence[str],
    logprobs: int | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed text completion: ``echoes[i]`` is the prompt text
    choice i starts with (echo) or ""."""
    offsets = [len(echo) for echo in echoes]
    finished: dict[int, Finished] = {}
    for index, echo in enumerate(echoes):
        if echo:
            yield data(
                make([CompletionChoice(index=index, text=echo, logprobs=None, finish_reason=None)])
            )
    try:
        async with aclosing(merged_events(handles)) as events:
            async for index, event in events:
                if isinstance(event, TextChunk):
                    shaped = None
                    if logprobs is not None and event.logprobs:
                        shaped = completion_logprobs(
                            event.logprobs, offsets[index], top=logprobs > 0
                        )
                    offsets[index] += len(event.text)
                    choice = CompletionChoice(
                        index=index, text=event.text, logprobs=shaped, finish_reason=None
                    )
                else:
                    finished[index] = event
                    choice = CompletionChoice(
                        index=index, text="", logprobs=None, finish_reason=event.finish_reason
                    )
                yield data(make([choice]))
    except LocalLabError as exc:
        yield error_data(exc)
        yield DONE
        return
    if include_usage:
        usage_chunk = make([])
        usage_chunk.usage = usage_per_prompt([finished[i] for i in range(len(handles))], n)
        yield data(usage_chunk)
    yield DONE
