"""Choosing the next token from a logits row: llama.cpp sampler chains, the repetition
penalty, greedy arg-max."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from locallab_cpp.engine.types import SamplingParams

Logits = np.ndarray[Any, np.dtype[np.float32]]


def make_sampler(params: SamplingParams) -> _internals.LlamaSampler:
    """llama.cpp's chain for sampled decoding: top-k, top-p, temperature, a seeded draw."""
    # The repetition penalty is not in the chain: apply_repetition_penalty changes the few
    # recent tokens' logits directly, where llama.cpp's penalty sampler walks the whole
    # vocabulary (262k entries for Gemma) on every token.
    chain = _internals.LlamaSampler()
    if params.top_k > 0:
        chain.add_top_k(params.top_k)
    chain.add_top_p(params.top_p, 1)
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


def sample(sampler: _internals.LlamaSampler | None, ctx: Any, index: int, logits: Logits) -> int:
    """The next token: arg-max for greedy decoding (``sampler`` None), else the chain's draw."""
    if sampler is None:
        # The same choice as llama.cpp's greedy sampler, without copying every candidate
        # into a token-data array.
        return int(logits.argmax())
    return int(llama_cpp.llama_sampler_sample(sampler.sampler, ctx, index))
