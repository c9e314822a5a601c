"""OpenAI's streamed responses: ``data: {chunk}`` events, then ``data: [DONE]``.

Each choice of a chat stream is read by its :class:`~.choice.ChoiceState` (reasoning split
off, tool calls found and checked), so content, reasoning and call deltas arrive apart; the
whole answer folds the same deltas. An error after the stream began is a last data event
with OpenAI's error envelope, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

import msgspec

from locallab_cpp.api.openai.choice import ChoiceState
from locallab_cpp.api.openai.common import (
    chat_logprobs,
    completion_logprobs,
    usage_per_prompt,
)
from locallab_cpp.api.openai.errors import OPENAI_ERRORS, error_object
from locallab_cpp.api.openai.responses import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    CompletionChoice,
    TextCompletion,
)
from locallab_cpp.engine.types import (
    Finished,
    FinishReason,
    GenerationHandle,
    TextChunk,
    TokenLogprob,
)
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.sse import DONE, EventStream, event_stream
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


async def chat_events(
    handles: Sequence[GenerationHandle],
    make: ChunkMaker,
    states: Sequence[ChoiceState],
    *,
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed chat completion with one choice per handle."""
    finished: dict[int, Finished] = {}
    pending: list[list[TokenLogprob]] = [[] for _ in states]
    for state in states:
        role = ChatDelta(role="assistant", content="")
        yield data(make([ChatChunkChoice(index=state.index, delta=role)]))
    try:
        async with aclosing(merged_events(handles)) as events:
            async for index, event in events:
                state = states[index]
                if isinstance(event, TextChunk):
                    pending[index] += event.logprobs
                    deltas = state.feed(event.text)
                    reason: FinishReason | None = None
                else:
                    finished[index] = event
                    deltas, reason = state.finish(event.finish_reason)
                    deltas.append(ChatDelta())  # the chunk that carries finish_reason
                for position, delta in enumerate(deltas):
                    last = position == len(deltas) - 1
                    chunk_logprobs = None
                    if logprobs and pending[index]:
                        # Text held back carries its tokens' logprobs to the next delta.
                        chunk_logprobs = chat_logprobs(pending[index])
                        pending[index] = []
                    choice = ChatChunkChoice(
                        index=index,
                        delta=delta,
                        logprobs=chunk_logprobs,
                        finish_reason=reason if last else None,
                    )
                    yield data(make([choice]))
    except LocalLabError as exc:
        yield error_data(exc)
        yield DONE
        return
    if include_usage:
        done = [finished[i] for i in range(len(handles))]
        usage_chunk = make([])
        usage_chunk.usage = usage_per_prompt(done, len(handles))
        yield data(usage_chunk)
    yield DONE


def chat_stream(
    handles: Sequence[GenerationHandle],
    make: ChunkMaker,
    states: Sequence[ChoiceState],
    *,
    logprobs: bool,
    include_usage: bool,
) -> EventStream:
    """The text/event-stream response of a streamed chat completion."""
    return event_stream(
        chat_events(handles, make, states, logprobs=logprobs, include_usage=include_usage)
    )


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
