"""What a sequence may ask for beyond plain sampling: presence/frequency penalties, a logit
bias, a grammar, token log-probabilities.

A sequence that asks for none of them has no :class:`Extras` and keeps the scheduler's
fast path (sampling.sample on the row, drafting for greedy decoding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
from llama_cpp import _internals

from locallab_cpp.engine.llama.grammar import GrammarConstraint, check_grammar
from locallab_cpp.engine.llama.logprobs import MAX_TOP_LOGPROBS, TokenTrack
from locallab_cpp.engine.llama.sampling import (
    Logits,
    apply_logit_bias,
    apply_presence_frequency,
    sample,
)
from locallab_cpp.engine.llama.text import Pieces
from locallab_cpp.engine.types import GenerationInput
from locallab_cpp.errors import InvalidRequest


def wanted(inp: GenerationInput) -> bool:
    """Whether ``inp`` asks for anything :class:`Extras` does."""
    params = inp.sampling
    return bool(
        params.presence_penalty
        or params.frequency_penalty
        or params.logit_bias
        or inp.grammar is not None
        or inp.logprobs is not None
    )


def plain_greedy(inp: GenerationInput) -> bool:
    """Greedy decoding that is the bare arg-max of the logits, so that drafting (which
    verifies guesses against arg-maxes) gives the same tokens."""
    params = inp.sampling
    return params.greedy and params.repetition_penalty == 1.0 and not wanted(inp)


def validate(inp: GenerationInput, vocab: Any, n_vocab: int) -> None:
    """Raise InvalidRequest for what the engine cannot honour: logprobs out of 0..20,
    logit_bias on unknown tokens or not finite, a grammar llama.cpp cannot parse."""
    if inp.logprobs is not None and not 0 <= inp.logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}.")
    for token, bias in inp.sampling.logit_bias:
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"logit_bias names token {token}; this model's token ids are 0 to {n_vocab - 1}."
            )
        if not math.isfinite(bias):
            raise InvalidRequest("logit_bias values must be finite numbers.")
    if inp.grammar is not None:
        check_grammar(vocab, inp.grammar)


class Extras:
    """One sequence's penalties, bias, grammar state and token log-probabilities (engine
    thread only)."""

    def __init__(self, inp: GenerationInput, vocab: Any, pieces: Pieces) -> None:
        self._params = inp.sampling
        self._vocab = vocab
        self.grammar = GrammarConstraint(vocab, inp.grammar) if inp.grammar is not None else None
        self.track = TokenTrack(inp.logprobs, pieces) if inp.logprobs is not None else None

    def close(self) -> None:
        """Free the grammar's llama.cpp state."""
        if self.grammar is not None:
            self.grammar.close()

    def choose(
        self,
        sampler: _internals.LlamaSampler | None,
        ctx: Any,
        index: int,
        logits: Logits,
        generated: Sequence[int],
    ) -> int:
        """The next token from ``logits`` (the repetition penalty already applied, in
        place), ``generated`` being the sequence's completion tokens so far.

        When the grammar allows no token at all the sequence cannot go on: the
        end-of-generation token is returned, so that it ends with finish reason "stop".
        """
        params = self._params
        apply_presence_frequency(
            logits, generated, params.presence_penalty, params.frequency_penalty
        )
        apply_logit_bias(logits, params.logit_bias)
        if self.track is not None:
            self.track.observe(logits)
        if self.grammar is None:
            token = sample(sampler, ctx, index, logits)
        else:
            pick = None if sampler is None else _chain_draw(sampler, ctx, index)
            chosen = self.grammar.choose(logits, pick)
            if chosen is None:
                return self._end_token()
            token = chosen
        if self.track is not None:
            self.track.chosen(logits, token)
        return token

    def _end_token(self) -> int:
        eos = int(llama_cpp.llama_vocab_eos(self._vocab))
        return eos if eos >= 0 else int(llama_cpp.llama_vocab_eot(self._vocab))


def _chain_draw(sampler: _internals.LlamaSampler, ctx: Any, index: int) -> Callable[[], int]:
    chain = sampler.sampler

    def draw() -> int:
        # The chain reads the row from the context, where penalties, bias and a grammar
        # mask were written in place.
        return int(llama_cpp.llama_sampler_sample(chain, ctx, index))

    return draw
