"""What every API does to generate: tokenize, check the context, submit, collect, count.

An API translates its request into prompts, :class:`~locallab_cpp.engine.types.SamplingParams`
and limits with its own defaults, calls these, and translates the
:class:`~locallab_cpp.engine.types.Completion` objects back into its own response shapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import Completion, GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.errors import ContextLengthExceeded

OFFLOOP_TOKENIZE_CHARS = 16_384
"""Tokenizing is fast C code, but a prompt this long is worth moving off the event loop."""

Tokens = tuple[int, ...]


async def tokenize(engine: Engine, text: str, *, add_bos: bool = True) -> Tokens:
    """Token ids of ``text``; long texts are tokenized in a worker thread."""
    if len(text) > OFFLOOP_TOKENIZE_CHARS:
        return tuple(await asyncio.to_thread(engine.tokenize, text, add_bos=add_bos))
    return tuple(engine.tokenize(text, add_bos=add_bos))


@dataclass(frozen=True, slots=True)
class ChatTokens:
    """A conversation rendered with the model's chat template and tokenized."""

    tokens: Tokens
    stop: tuple[str, ...]
    """Stop strings the template needs (its end-of-turn marker)."""


async def chat_tokens(engine: Engine, messages: Sequence[Mapping[str, Any]]) -> ChatTokens:
    """``messages`` (``{"role", "content"}`` each) as the prompt the model continues."""
    rendered = engine.chat_prompt(messages)
    # A template that writes the BOS token's text itself must not get a second one.
    tokens = await tokenize(engine, rendered.text, add_bos=not rendered.has_bos_text)
    return ChatTokens(tokens, rendered.stop)


def check_fits(engine: Engine, prompts: Sequence[Tokens]) -> None:
    """Raise ContextLengthExceeded unless every prompt leaves room in a slot's context.

    Checked here, for all APIs and before anything is queued, so a batch is refused whole;
    an engine checks again as its own guard.
    """
    n_ctx = engine.info.n_ctx
    for prompt in prompts:
        if len(prompt) >= n_ctx:
            raise ContextLengthExceeded(
                f"The prompt is {len(prompt)} tokens; this model's context holds {n_ctx} "
                "per request. Shorten the prompt, or restart the server with a larger --n-ctx."
            )
        if not prompt:
            raise ContextLengthExceeded("The prompt is empty after tokenization.")


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
    return engine.submit(inputs)


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


def usage_of(done: Sequence[Completion]) -> TokenUsage:
    """The token counts of ``done``, summed."""
    return TokenUsage(
        prompt_tokens=sum(c.prompt_tokens for c in done),
        completion_tokens=sum(c.completion_tokens for c in done),
        cached_prompt_tokens=sum(c.cached_tokens for c in done),
    )
