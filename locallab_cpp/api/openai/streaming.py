"""OpenAI's streamed responses: ``data: {chunk}`` events, then ``data: [DONE]``.

Each choice of a chat stream passes its text through the model's reasoning splitter
(``<think>`` text goes to ``reasoning_content``) and, when tools are offered, its family's
tool-call streamer, so content, reasoning and call deltas arrive apart. An error after the
stream began is a last data event with OpenAI's error envelope, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import msgspec

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
    FunctionDelta,
    TextCompletion,
    ToolCallDeltaOut,
)
from locallab_cpp.api.openai.tooling import ToolPlan
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
from locallab_cpp.serving.reasoning import ReasoningSplitter
from locallab_cpp.serving.tools import ToolCallDelta, ToolCallFormat, new_call_id

_encoder = msgspec.json.Encoder()


def data(payload: object) -> bytes:
    """One SSE event holding ``payload`` as compact JSON (always a single line)."""
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def error_data(exc: LocalLabError) -> bytes:
    """The last event of a failed stream: ``{"error": {...}}`` as a plain body would be."""
    problem = Problem.from_error(exc)
    return data({"error": error_object(problem, OPENAI_ERRORS.status(problem.kind))})


@dataclass(slots=True)
class _Call:
    """A tool call being streamed: announced once its name is known."""

    id: str
    name: str | None = None
    arguments: str = ""
    announced: bool = False


@dataclass
class ChoiceState:
    """One chat choice as it streams: reasoning split, tool calls read, logprobs carried."""

    index: int
    plan: ToolPlan
    fmt: ToolCallFormat | None
    thinking: bool = False
    """The prompt opened a ``<think>``: the output starts inside the reasoning."""
    raw: str = ""
    """Everything after the reasoning, as the model wrote it (for an invalid auto call)."""
    content: str = ""
    """Content sent so far."""
    calls: dict[int, _Call] = field(default_factory=dict)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.splitter = ReasoningSplitter(started_in_reasoning=self.thinking)
        self.streamer = self.fmt.streamer() if self.fmt is not None and self.plan.active else None

    def feed(self, text: str) -> list[ChatDelta]:
        """Deltas for newly generated text (perhaps none while a tag is undecided)."""
        reasoning, answer = self.splitter.feed(text)
        return self._deltas(reasoning, answer)

    def finish(self) -> tuple[list[ChatDelta], bool]:
        """Deltas of the text held back, and whether the choice ended in tool calls."""
        reasoning, answer = self.splitter.finish()
        deltas = self._deltas(reasoning, answer, final=True)
        if self.plan.forced:
            return deltas, bool(self.calls)
        if not self.calls:
            return deltas, False
        # auto: the calls were held back until they could be checked whole.
        calls = list(self.calls.values())
        kept = calls if self.plan.parallel else calls[:1]
        if all(c.name and self.plan.invalid(c.name, c.arguments) is None for c in kept):
            for position, call in enumerate(kept):
                deltas.append(ChatDelta(tool_calls=self._announce(position, call)))
                deltas.append(ChatDelta(tool_calls=[self._fragment(position, call.arguments)]))
            return deltas, True
        rest = self.raw[len(self.content) :] if self.raw.startswith(self.content) else ""
        if rest:
            deltas.append(ChatDelta(content=rest))
        return deltas, False

    def _deltas(self, reasoning: str, answer: str, *, final: bool = False) -> list[ChatDelta]:
        deltas = [ChatDelta(reasoning_content=reasoning)] if reasoning else []
        if self.streamer is None:
            if answer:
                self.content += answer
                deltas.append(ChatDelta(content=answer))
            return deltas
        self.raw += answer
        content, call_deltas = self.streamer.feed(answer) if answer else ("", [])
        if final:
            more, more_calls = self.streamer.finish()
            content += more
            call_deltas = [*call_deltas, *more_calls]
        if content:
            self.content += content
            deltas.append(ChatDelta(content=content))
        for delta in call_deltas:
            out = self._call_delta(delta)
            if out:
                deltas.append(ChatDelta(tool_calls=out))
        return deltas

    def _call_delta(self, delta: ToolCallDelta) -> list[ToolCallDeltaOut]:
        call = self.calls.get(delta.index)
        if call is None:
            call = self.calls[delta.index] = _Call(id=delta.id or new_call_id())
        if delta.name:
            call.name = delta.name
        call.arguments += delta.arguments
        if not self.plan.forced:
            return []  # auto: sent whole once checked, in finish()
        out: list[ToolCallDeltaOut] = []
        if not call.announced and call.name is not None:
            # The first delta of a call: id, type, name and empty arguments (OpenAI's order).
            out += self._announce(delta.index, call)
            if call.arguments:
                out.append(self._fragment(delta.index, call.arguments))
        elif call.announced and delta.arguments:
            out.append(self._fragment(delta.index, delta.arguments))
        return out

    @staticmethod
    def _announce(index: int, call: _Call) -> list[ToolCallDeltaOut]:
        call.announced = True
        return [
            ToolCallDeltaOut(
                index=index,
                id=call.id,
                type="function",
                function=FunctionDelta(name=call.name, arguments=""),
            )
        ]

    @staticmethod
    def _fragment(index: int, arguments: str) -> ToolCallDeltaOut:
        return ToolCallDeltaOut(index=index, function=FunctionDelta(arguments=arguments))


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
    for state in states:
        role = ChatDelta(role="assistant", content="")
        yield data(make([ChatChunkChoice(index=state.index, delta=role)]))
    try:
        async with aclosing(merged_events(handles)) as events:
            async for index, event in events:
                state = states[index]
                if isinstance(event, TextChunk):
                    state.pending_logprobs += event.logprobs
                    deltas = state.feed(event.text)
                    reason: FinishReason | None = None
                else:
                    finished[index] = event
                    deltas, called = state.finish()
                    reason = "tool_calls" if called else event.finish_reason
                    deltas.append(ChatDelta())  # the chunk that carries finish_reason
                for position, delta in enumerate(deltas):
                    last = position == len(deltas) - 1
                    chunk_logprobs = None
                    if logprobs and state.pending_logprobs:
                        chunk_logprobs = chat_logprobs(state.pending_logprobs)
                        state.pending_logprobs = []
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
