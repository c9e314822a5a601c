"""Sliding-window checkpoints (engine/llama/windows.py) with the real embedded model, in
process. Gemma 3 keeps a 512-token window in 15 of its 18 layers; with ``swa_full`` off the
cache holds only windows, so a cut back into a sequence (a follow-up that diverges, a
repeated prompt, eviction from the end of an idle cache) must go through a checkpoint.

The reference for "correct" is the same prompt computed from an empty cache by a fresh
engine. Cached and cold runs compute the prompt in different chunks and cell layouts, which
rounds differently: measured on the eviction case below, the likeliest token's
log-probability moved by 0.06-0.14 and the less likely alternatives' by up to 0.8, as much
when the prompt was computed from scratch in the shared layout or with flash attention off
as when it resumed from a checkpoint. So the prompts end where the next token is no
near-tie ("the lazy" -> " dog"), and the check is that token and its log-probability.
With one slot the window cache has 1024 cells, so 900 prompt tokens plus 300 generated
ones overwrite cells of the window at the prompt's end: a resume that ignored this would
attend to missing cells.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.llama.windows import CHECKPOINT_BEFORE_END, MIN_CHECKPOINT_TOKENS
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams
from locallab_cpp.models.sizing import CHECKPOINTS_PER_SLOT

pytestmark = pytest.mark.integration

BACK = CHECKPOINT_BEFORE_END
GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)
FOX = " The quick brown fox jumps over the lazy"
TOLERANCE = 0.35
"""Most the chosen token's log-probability may move between a cached and a cold run."""
WORDS = " ".join(f"item {i} is {'red' if i % 3 else 'blue'}." for i in range(200))


def _run(
    engine: LlamaEngine, prompt: Sequence[int], max_tokens: int, checkpoint_at: int | None = None
) -> Completion:
    async def go() -> Completion:
        inp = GenerationInput(
            tuple(prompt), GREEDY, max_tokens, logprobs=3, checkpoint_at=checkpoint_at
        )
        (handle,) = engine.submit([inp])
        return await handle.result()

    return asyncio.run(go())


def _tail(engine: LlamaEngine, text: str) -> list[int]:
    return engine.tokenize(text, add_bos=False)


def _cold(prompts: Sequence[Sequence[int]], max_tokens: int) -> list[Completion]:
    """Each prompt's completion from an empty cache (a fresh engine per prompt)."""
    out = []
    for prompt in prompts:
        engine = open_embedded_engine(parallel=1, n_ctx=4096)
        try:
            out.append(_run(engine, prompt, max_tokens))
        finally:
            engine.close()
    return out


def _agree(cached: Completion, cold: Completion) -> None:
    """Same first token, with its log-probability within TOLERANCE."""
    assert cached.token_ids[:1] == cold.token_ids[:1], (cached, cold)
    mine, theirs = cached.logprobs[0].logprob, cold.logprobs[0].logprob
    assert abs(mine - theirs) <= TOLERANCE, (cached.logprobs[0], cold.logprobs[0])


def test_gemma_keeps_windows_and_cuts_through_checkpoints() -> None:
    engine = open_embedded_engine(parallel=1, n_ctx=4096)
    try:
        loop = engine._loop
        windows = loop.windows
        assert windows.enabled and windows.n_swa == 512
        assert engine.info.details["sliding_window"] == 512
        p1 = engine.tokenize(WORDS)[:900]
        first = _run(engine, p1, 300)
        assert first.completion_tokens >= 200, "needs a long answer to overwrite the window"
        slot = loop.slots[0]
        assert [c.n_tokens for c in windows.checkpoints(slot)] == [len(p1) - BACK]

        # A turn that diverges right after the first prompt resumes at its checkpoint.
        diverging = [*p1, *_tail(engine, FOX)]
        restored = windows.restored
        diverged = _run(engine, diverging, 8)
        assert diverged.cached_tokens == len(p1) - BACK
        assert windows.restored == restored + 1

        # A follow-up that extends what the cache holds needs no checkpoint at all.
        extended = [*diverging, *diverged.token_ids, *_tail(engine, " Again:" + FOX)]
        follow = _run(engine, extended, 8)
        assert follow.cached_tokens == len(diverging) + len(diverged.token_ids) - 1
        assert windows.restored == restored + 1
        points = [c.n_tokens for c in windows.checkpoints(slot)]
        assert len(points) <= CHECKPOINTS_PER_SLOT
        # It resumed past the usual place (a few tokens before the end): checkpoint there.
        assert points[-1] == max(len(extended) - BACK, follow.cached_tokens)

        # The same prompt again resumes at its checkpoint, a few tokens before its end.
        again = _run(engine, extended, 8)
        assert again.cached_tokens == points[-1]
        assert again.token_ids[:1] == follow.token_ids[:1]
    finally:
        engine.close()
    for cached, cold in zip((diverged, follow), _cold([diverging, extended], 8), strict=True):
        _agree(cached, cold)


def test_a_checkpoint_at_hint_lets_a_prompt_that_parts_before_the_end_resume() -> None:
    # A FIM prompt (serving/fim.py) edited a few lines before the cursor parts from the last
    # one long before its end checkpoint: the hint's checkpoint is what it resumes from.
    engine = open_embedded_engine(parallel=1, n_ctx=4096)
    try:
        windows, slot = engine._loop.windows, engine._loop.slots[0]
        words = engine.tokenize(WORDS)
        p1, hint = words[:700], 500
        _run(engine, p1, 4, checkpoint_at=hint)
        assert [c.n_tokens for c in windows.checkpoints(slot)] == [hint, len(p1) - BACK]
        edited = [*p1[:600], *_tail(engine, FOX)]
        second = _run(engine, edited, 8, checkpoint_at=550)
        assert second.cached_tokens == hint
        assert [c.n_tokens for c in windows.checkpoints(slot)] == [550, len(edited) - BACK]
    finally:
        engine.close()
    _agree(second, _cold([edited], 8)[0])


def test_short_prompts_take_no_checkpoint() -> None:
    engine = open_embedded_engine(parallel=1, n_ctx=2048)
    try:
        prompt = engine.tokenize("The weather today is")
        assert len(prompt) < MIN_CHECKPOINT_TOKENS
        _run(engine, prompt, 4)
        assert engine._loop.windows.checkpoints(engine._loop.slots[0]) == []
    finally:
        engine.close()


def _eviction(engine: LlamaEngine) -> tuple[list[int], Completion]:
    """The pool (2048 cells, two slots) is too small for both caches: the idle one is cut
    from its end while the other request's prompt goes in, which with windows means back
    to its latest checkpoint that fits. Returns the last prompt and its completion."""
    loop = engine._loop
    words = engine.tokenize(WORDS)
    p1 = words[:900]
    first = _run(engine, p1, 8)
    longer = [*p1, *first.token_ids, *words[900:1200]]
    _run(engine, longer, 8)
    slot = next(s for s in loop.slots if s.kv_tokens)
    assert [c.n_tokens for c in loop.windows.checkpoints(slot)] == [
        len(p1) - BACK,
        len(longer) - BACK,
    ]
    held = len(slot.kv_tokens)
    other = engine.tokenize(" ".join(f"word {i} of the list" for i in range(400)))[:1100]
    _run(engine, other, 8)
    assert len(slot.kv_tokens) == len(p1) - BACK, "cut back to the checkpoint that fits"
    assert engine.stats().evicted_tokens == held - len(p1) + BACK
    last = [*p1, *_tail(engine, FOX)]
    resumed = _run(engine, last, 8)
    assert resumed.cached_tokens == len(p1) - BACK, resumed
    return last, resumed


def test_eviction_from_an_idle_window_cache_lands_on_a_checkpoint() -> None:
    engine = open_embedded_engine(parallel=2, n_ctx=2048, kv_pool_tokens=2048)
    try:
        last, resumed = _eviction(engine)
        assert resumed.completion_tokens == 8, resumed
    finally:
        engine.close()
    (cold,) = _cold([last], 8)
    _agree(resumed, cold)
