"""Choosing the next token from a logits row: llama.cpp sampler chains, the repetition,
presence and frequency penalties and the logit bias (numpy, in place), greedy arg-max, and
log-probabilities."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from locallab_cpp.engine.types import SamplingParams

Logits = np.ndarray[Any, np.dtype[np.float32]]


def make_sampler(params: SamplingParams) -> _internals.LlamaSampler:
    """llama.cpp's chain for sampled decoding: top-k, top-p, min-p, temperature, a seeded
    draw."""
    # The repetition penalty is not in the chain: apply_repetition_penalty changes the few
    # recent tokens' logits directly, where llama.cpp's penalty sampler walks the whole
    # vocabulary (262k entries for Gemma) on every token.
    chain = _internals.LlamaSampler()
    if params.top_k > 0:
        chain.add_top_k(params.top_k)
    if params.top_p < 1.0:
        chain.add_top_p(params.top_p, 1)
    if params.min_p > 0.0:
        chain.add_min_p(params.min_p, 1)
    chain.add_temp(params.temperature)
    seed = params.seed if params.seed is not None else random.getrandbits(32) - 1
    chain.add_dist(seed % 0xFFFFFFFF)
    return chain


def logits_row(ctx: Any, index: int, n_vocab: int) -> Logits:
    """The logits row of batch position ``index``, as a view (no copy)."""
    row = llama_cpp.llama_get_logits_ith(ctx, index)
    return np.ctypeslib.as_array(row, shape=(n_vocab,))


def apply_repetition_penalty(logits: Logits, recent: Iterable[int], penalty: float) -> None:
    """llama.cpp's rule (penalty_repeat), in place: shrink positive logits of recent tokens,
    grow negative ones."""
    ids = np.fromiter(set(recent), dtype=np.intp)
    if penalty == 1.0 or ids.size == 0:
        return
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)


def apply_presence_frequency(
    logits: Logits, generated: Sequence[int], presence: float, frequency: float
) -> None:
    """OpenAI's penalties, in place: ``logit -= count * frequency + (count > 0) * presence``
    for every token generated so far (``generated``: this sequence's completion tokens)."""
    if (presence == 0.0 and frequency == 0.0) or not generated:
        return
    ids, counts = np.unique(np.asarray(generated, dtype=np.intp), return_counts=True)
    logits[ids] -= (counts * frequency + presence).astype(np.float32)


def apply_logit_bias(logits: Logits, bias: Sequence[tuple[int, float]]) -> None:
    """Add each (token id, bias) pair's bias to the token's logit, in place."""
    for token, value in bias:
        logits[token] += value


def logsumexp(logits: Logits) -> float:
    """log(sum(exp(logits))), computed stably; a token's log-probability is its logit minus
    this."""
    peak = float(logits.max())
    if not np.isfinite(peak):
        return peak
    total = float(np.exp(logits - peak, dtype=np.float32).sum(dtype=np.float64))
    return peak + float(np.log(total))


def top_logprobs(logits: Logits, n: int, lse: float) -> list[tuple[int, float]]:
    """The ``n`` most likely tokens of the row as (id, logprob), most likely first (ties:
    lower id first)."""
    if n <= 0:
        return []
    n = min(n, logits.shape[0])
    # argpartition is linear in the vocabulary; only the n winners get sorted.
    best = np.argpartition(-logits, n - 1)[:n]
    order = np.lexsort((best, -logits[best]))
    return [(int(best[i]), float(logits[best[i]]) - lse) for i in order]


def sample(sampler: _internals.LlamaSampler | None, ctx: Any, index: int, logits: Logits) -> int:
    """The next token: arg-max for greedy decoding (``sampler`` None), else the chain's draw."""
    if sampler is None:
        # The same choice as llama.cpp's greedy sampler, without copying every candidate
        # into a token-data array.
        return int(logits.argmax())
    return int(llama_cpp.llama_sampler_sample(sampler.sampler, ctx, index))
