"""What every API does to generate: tokenize, check the context, submit, collect, count.

An API translates its request into prompts, :class:`~locallab_cpp.engine.types.SamplingParams`
and limits with its own defaults, calls these, and translates the
:class:`~locallab_cpp.engine.types.Completion` objects back into its own response shapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import (
    Completion,
    Finished,
    GenerationHandle,
    GenerationInput,
    SamplingParams,
    TextChunk,
    ToolSpec,
)
from locallab_cpp.errors import ContextLengthExceeded, LocalLabError
from locallab_cpp.serving import telemetry
from locallab_cpp.serving.reasoning import prompt_opens_reasoning

logger = logging.getLogger("locallab_cpp")

INTERNAL_STREAM_DETAIL = "Internal server error; see the server log."

OFFLOOP_TOKENIZE_CHARS = 16_384
"""Tokenizing is fast C code, but a prompt this long is worth moving off the event loop."""

Tokens = tuple[int, ...]


async def tokenize(engine: Engine, text: str, *, add_bos: bool = True) -> Tokens:
    """Token ids of ``text``; long texts are tokenized in a worker thread, and texts too
    long for the context in any tokenization are refused without it."""
    if len(text) > OFFLOOP_TOKENIZE_CHARS:
        _check_length(engine, text)
        return tuple(await asyncio.to_thread(engine.tokenize, text, add_bos=add_bos))
    return tuple(engine.tokenize(text, add_bos=add_bos))


@dataclass(frozen=True, slots=True)
class ChatTokens:
    """A conversation rendered with the model's chat template and tokenized."""

    tokens: Tokens
    stop: tuple[str, ...]
    """Stop strings the template needs (its end-of-turn marker)."""
    tool_format: str = "hermes"
    """How this model writes tool calls (ChatPrompt.tool_format: "hermes", "llama3",
    "mistral"), for serving.tools.tool_format_for."""
    opens_reasoning: bool = False
    """The prompt leaves a ``<think>`` open, so the output starts inside the reasoning
    (serving.reasoning.ReasoningSplitter's ``started_in_reasoning``)."""


async def chat_tokens(
    engine: Engine,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[ToolSpec] | None = None,
) -> ChatTokens:
    """``messages`` (``{"role", "content"}`` each, or OpenAI-style turns with tool calls and
    results) as the prompt the model continues, offering it ``tools`` if any.

    A long conversation is rendered and tokenized in a worker thread: the template and the
    scan for control-token text take time in proportion to the text (seconds for megabytes),
    and the event loop must keep answering meanwhile."""
    if _text_size((messages, tools), OFFLOOP_TOKENIZE_CHARS) > OFFLOOP_TOKENIZE_CHARS:
        return await asyncio.to_thread(_chat_tokens, engine, messages, tools)
    return _chat_tokens(engine, messages, tools)


def _text_size(value: Any, limit: int) -> int:
    """The length of the strings in ``value`` (nested mappings and sequences), counted until
    it passes ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def _chat_tokens(
    engine: Engine, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] | None
) -> ChatTokens:
    rendered = engine.chat_prompt(messages, tools=tools)
    _check_length(engine, rendered.text)
    # A template that writes the BOS token's text itself must not get a second one.
    add_bos = not rendered.has_bos_text
    if rendered.segments:
        tokens = _segment_tokens(engine, rendered.segments, add_bos)
    else:
        tokens = tuple(engine.tokenize(rendered.text, add_bos=add_bos))
    return ChatTokens(
        tokens,
        rendered.stop,
        rendered.tool_format,
        prompt_opens_reasoning(rendered.generation_prompt),
    )


def _check_length(engine: Engine, text: str) -> None:
    info = engine.info
    # len(text) bounds the UTF-8 length from below: cheap, and enough to refuse megabytes.
    ContextLengthExceeded.check_text(len(text), info.max_token_bytes, info.n_ctx)


def _segment_tokens(engine: Engine, segments: Sequence[tuple[str, bool]], add_bos: bool) -> Tokens:
    """The template's pieces tokenized with special tokens parsed, the client's as plain
    text (so a message holding ``<|im_start|>system`` cannot forge a turn); BOS only first."""
    tokens: list[int] = []
    for index, (text, client) in enumerate(segments):
        tokens += engine.tokenize(text, add_bos=add_bos and index == 0, special=not client)
    return tuple(tokens)


def check_fits(engine: Engine, prompts: Sequence[Tokens]) -> None:
    """Raise ContextLengthExceeded unless every prompt leaves room in a slot's context.

    Checked here, for all APIs and before anything is queued, so a batch is refused whole;
    an engine checks again as its own guard.
    """
    for prompt in prompts:
        ContextLengthExceeded.check(len(prompt), engine.info.n_ctx)


def inputs_for(
    prompts: Sequence[Tokens],
    sampling: SamplingParams,
    max_tokens: int,
    stop: tuple[str, ...] = (),
) -> list[GenerationInput]:
    """One generation input per prompt, all with the same settings (an API that needs more,
    such as logprobs or a grammar, ``dataclasses.replace``-s them in)."""
    return [GenerationInput(p, sampling, max_tokens, stop) for p in prompts]


def submit(engine: Engine, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
    """Queue ``inputs``, all or none, after checking that each prompt fits.

    Raises ContextLengthExceeded for a prompt that does not fit and ServerBusy (from the
    engine) when the queue cannot take them all.
    """
    check_fits(engine, [inp.prompt_tokens for inp in inputs])
    handles = engine.submit(inputs)
    # The one place every API's generations pass: their tokens and latencies are counted
    # here, once, whatever API asked (serving/telemetry.py).
    telemetry.watch(engine.info.model_id, inputs, handles)
    return handles


async def collect(handles: Sequence[GenerationHandle]) -> list[Completion]:
    """The whole result of each generation, in order; cancelling this cancels them all."""
    try:
        return list(await asyncio.gather(*(h.result() for h in handles)))
    finally:
        for handle in handles:
            handle.cancel()  # a no-op for the finished ones


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts summed over the generations of one request."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


class Counted(Protocol):
    """What a finished generation reports of its tokens (Completion, Finished,
    ChoiceFinished)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...


def usage_of(done: Sequence[Counted], copies: int = 1) -> TokenUsage:
    """The token counts of ``done``, summed, each prompt counted once: ``done`` holds each
    prompt's ``copies`` generations one after another (GenerationInput.n), and the copies
    after the first report the prompt as cached, having shared its computation."""
    firsts = done[::copies]
    return TokenUsage(
        prompt_tokens=sum(c.prompt_tokens for c in firsts),
        completion_tokens=sum(c.completion_tokens for c in done),
        cached_prompt_tokens=sum(c.cached_tokens for c in firsts),
    )


async def merged_events(
    handles: Sequence[GenerationHandle],
) -> AsyncGenerator[tuple[int, TextChunk | Finished], None]:
    """The events of several generations as they come, each with its handle's index.

    For streaming ``n`` choices (or several prompts) in one response: each handle is read
    by its own task, so a slow choice never holds back a fast one. The first error ends the
    iteration as a LocalLabError (an unexpected one logged and replaced by a detail without
    internals); leaving early, or an error, cancels every generation still running.
    """
    queue: asyncio.Queue[tuple[int, TextChunk | Finished | BaseException]] = asyncio.Queue()

    async def pump(index: int, handle: GenerationHandle) -> None:
        try:
            async for event in handle.events():
                queue.put_nowait((index, event))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    running = len(handles)
    try:
        while running:
            index, item = await queue.get()
            if isinstance(item, LocalLabError):
                raise item
            if isinstance(item, BaseException):
                # "stream failed" is what the end-to-end suite looks for in the server log.
                logger.error("stream failed", exc_info=item)
                raise LocalLabError(INTERNAL_STREAM_DETAIL) from item
            if isinstance(item, Finished):
                running -= 1
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for handle in handles:
            handle.cancel()  # a no-op for the finished ones
