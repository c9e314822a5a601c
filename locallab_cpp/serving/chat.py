"""A chat request, whatever API it came in: resolve the model, render the conversation,
plan the tools, build the generation input, submit; then the answer as neutral events or
whole (serving/events.py).

An API translates its request into a :class:`ChatRequest` (its defaults, its names for
things, its 400s for its own fields), calls :func:`start_chat`, and renders what
:meth:`ChatRun.events` or :meth:`ChatRun.collect` give in its own shapes. Reasoning
splitting, tool-call reading and checking, and the grammar chosen all happen here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.schema import checked_grammar, grammar_for_json_schema
from locallab_cpp.engine.types import (
    Completion,
    GenerationHandle,
    GenerationInput,
    SamplingParams,
    TextChunk,
)
from locallab_cpp.serving import generation
from locallab_cpp.serving.answer import AnswerStream, whole_answer
from locallab_cpp.serving.events import Answer, AnswerEvent, ChoiceFinished
from locallab_cpp.serving.generation import TokenUsage
from locallab_cpp.serving.toolcalls.formats import ToolCallFormat
from locallab_cpp.serving.toolcalls.plan import OFF, ToolPlan
from locallab_cpp.serving.tools import tool_format_for
from locallab_cpp.serving.turns import Turn, messages_of


class EngineSource(Protocol):
    """Where the engine comes from (models.manager.ModelManager)."""

    async def engine_for(self, model_id: str | None) -> Engine: ...


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request in no API's shape."""

    turns: Sequence[Turn]
    sampling: SamplingParams
    max_tokens: int | None = None
    """The completion's token limit; None: the whole context (the engine caps each
    sequence at what is left of its slot after the prompt)."""
    model: str | None = None
    """A registry id, loaded if it is not; None: the loaded model."""
    tools: ToolPlan = OFF
    """From serving.toolcalls.plan.plan_tools, made when the request arrived."""
    stop: tuple[str, ...] = ()
    """The client's stop strings (the template's end-of-turn is added here)."""
    n: int = 1
    logprobs: int | None = None
    """Report each token's log-probability and this many alternatives; None: off."""
    json_schema: Mapping[str, Any] | bool | None = None
    """The answer must be JSON valid under this schema (a forced tool call wins)."""
    grammar: str | None = None
    """GBNF the answer must match, instead of ``json_schema`` (a forced tool call wins)."""
    split_reasoning: bool = True
    """Whether ``<think>`` text is reported apart (ReasoningDelta) or as text."""


@dataclass
class ChatRun:
    """A submitted chat request. Read it once: :meth:`events` or :meth:`collect`."""

    model: str
    """The id of the model that answers."""
    prompt_tokens: int
    """The rendered prompt's length (each choice reports it again when it finishes)."""
    handles: list[GenerationHandle]
    streams: list[AnswerStream]
    _finished: list[ChoiceFinished | None] = field(init=False)

    def __post_init__(self) -> None:
        self._finished = [None] * len(self.handles)

    @property
    def n(self) -> int:
        """How many choices the run generates (indexes 0 to n - 1)."""
        return len(self.handles)

    async def events(self) -> AsyncGenerator[tuple[int, AnswerEvent], None]:
        """Each choice's events as they come, with the choice's index; the first error
        ends it as a LocalLabError, and leaving early cancels every choice still running
        (serving.generation.merged_events)."""
        async with aclosing(generation.merged_events(self.handles)) as merged:
            async for index, event in merged:
                stream = self.streams[index]
                if isinstance(event, TextChunk):
                    out = stream.feed(event.text, event.logprobs)
                else:
                    out = stream.finish(event)
                    self._note(index, out)
                for answer_event in out:
                    yield index, answer_event

    async def collect(self) -> list[Answer]:
        """Every choice's whole answer, in order; cancelling this cancels them all."""
        done: list[Completion] = await generation.collect(self.handles)
        answers = [whole_answer(s, c) for s, c in zip(self.streams, done, strict=True)]
        for index, answer in enumerate(answers):
            self._finished[index] = answer.finished
        return answers

    def usage(self) -> TokenUsage:
        """The request's token counts (the prompt once), after every choice finished."""
        finished = [f for f in self._finished if f is not None]
        if len(finished) != len(self._finished):
            raise RuntimeError("usage is known once every choice finished")
        return generation.usage_of(finished, len(finished))

    def _note(self, index: int, events: list[AnswerEvent]) -> None:
        last = events[-1]
        assert isinstance(last, ChoiceFinished)
        self._finished[index] = last


async def count_prompt(
    models: EngineSource, turns: Sequence[Turn], *, model: str | None = None, tools: ToolPlan = OFF
) -> int:
    """The length in tokens of the prompt :func:`start_chat` would submit for ``turns`` and
    ``tools`` (rendered and tokenized the same way), submitting nothing."""
    engine = await models.engine_for(model)
    chat = await generation.chat_tokens(engine, messages_of(turns), tools=tools.tools)
    return len(chat.tokens)


async def start_chat(models: EngineSource, request: ChatRequest) -> ChatRun:
    """Resolve the model, render the conversation (off the event loop when long), choose
    the grammar and submit the request's ``n`` choices.

    Raises what rendering and submitting raise: ContextLengthExceeded, ServerBusy,
    InvalidRequest (a schema the grammar converter refuses, a template that fails)."""
    engine = await models.engine_for(request.model)
    plan = request.tools
    chat = await generation.chat_tokens(engine, messages_of(request.turns), tools=plan.tools)
    fmt = tool_format_for(chat.tool_format) if plan.active else None
    inp = GenerationInput(
        prompt_tokens=chat.tokens,
        sampling=request.sampling,
        max_tokens=request.max_tokens if request.max_tokens is not None else engine.info.n_ctx,
        stop=request.stop + chat.stop,
        logprobs=request.logprobs,
        # A large schema takes a while to convert and to parse: a worker thread does both.
        grammar=await asyncio.to_thread(_grammar, request, plan, fmt),
        n=request.n,
        # The family's call markers are control tokens its parser must see in the text.
        keep_special=fmt.markers if fmt is not None else (),
    )
    handles = generation.submit(engine, [inp])
    streams = [
        AnswerStream(
            plan,
            fmt,
            thinking=chat.opens_reasoning,
            split_reasoning=request.split_reasoning,
            stops=request.stop,
        )
        for _ in handles
    ]
    return ChatRun(engine.info.model_id, len(chat.tokens), handles, streams)


def _grammar(request: ChatRequest, plan: ToolPlan, fmt: ToolCallFormat | None) -> str | None:
    """The request's grammar, accepted by llama.cpp's parser (blocking): a forced call is
    the whole answer, so its grammar wins over the output's."""
    grammar = plan.grammar(fmt) if fmt is not None else None
    if grammar is None:
        grammar = request.grammar
    if grammar is None and request.json_schema is not None:
        grammar = grammar_for_json_schema(request.json_schema)
    return checked_grammar(grammar) if grammar is not None else None
