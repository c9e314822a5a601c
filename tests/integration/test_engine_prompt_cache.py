"""The prompt cache beyond the slots (engine/llama/prompt_cache.py, prefix_reuse.py) with
the real embedded model, in process: a prompt restored into a slot after its own cache was
evicted, a prompt that parts from a cached one inside it, and a restart that restores a
prompt from disk. Gemma 3 is a sliding-window model, so what a cached state gives a prompt
that parts from it is its window checkpoint before that point.

"Correct" is the same prompt computed from an empty cache by a fresh engine with the cache
off: the first token is the same, its log-probability within the tolerance that
test_engine_windows.py measured for cached against cold runs (cached and cold runs compute
in other chunks and cell layouts, which rounds differently).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.llama.prompt_cache import CHECKPOINTS_BEFORE_END
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)
FOX = " The quick brown fox jumps over the lazy"
TOLERANCE = 0.35
MIN_TOKENS = 256
SHARED = " ".join(f"rule {i}: item {i} is {'red' if i % 3 else 'blue'}." for i in range(90))
OTHER = " ".join(f"note {i}: box {i} holds {i * 7 % 13} coins." for i in range(90))
SETTINGS = {"parallel": 2, "n_ctx": 2048, "kv_pool_tokens": 2048}
"""Two slots over a pool that holds one long prompt and part of another: the second evicts
the first's cache."""


def _run(engine: LlamaEngine, prompt: Sequence[int], max_tokens: int = 1) -> Completion:
    async def go() -> Completion:
        (handle,) = engine.submit([GenerationInput(tuple(prompt), GREEDY, max_tokens, logprobs=3)])
        return await handle.result()

    return asyncio.run(go())


def _prompt(engine: LlamaEngine, *parts: str) -> list[int]:
    return engine.tokenize(SHARED) + [t for p in parts for t in engine.tokenize(p, add_bos=False)]


def _cold(prompt: Sequence[int]) -> Completion:
    engine = open_embedded_engine(prompt_cache_ram=0, **SETTINGS)
    try:
        return _run(engine, prompt)
    finally:
        engine.close()


def _agree(cached: Completion, cold: Completion) -> None:
    assert cached.token_ids[:1] == cold.token_ids[:1], (cached, cold)
    mine, theirs = cached.logprobs[0].logprob, cold.logprobs[0].logprob
    assert abs(mine - theirs) <= TOLERANCE, (cached.logprobs[0], cold.logprobs[0])


def _stats(engine: LlamaEngine) -> dict[str, int]:
    figures = engine.stats().prompt_cache
    assert figures is not None
    return figures


def test_a_prompt_comes_back_after_its_slot_was_evicted_and_in_another_session() -> None:
    engine = open_embedded_engine(prompt_cache_min_tokens=MIN_TOKENS, **SETTINGS)
    try:
        first = _prompt(engine, " Session one asks about the fox.", FOX)
        assert 1024 < len(first) < 2048
        assert _run(engine, first).cached_tokens == 0
        assert _stats(engine)["entries"] == 1
        other = engine.tokenize(OTHER)
        assert _run(engine, other).cached_tokens == 0  # evicts the first prompt's slot cache
        assert engine.stats().evicted_tokens > 0

        # The same prompt again: restored whole (up to the checkpoint before its end).
        again = _run(engine, first)
        assert again.cached_tokens >= len(first) - 8, again
        # Another session's prompt parting from it after the shared rules: resumed from the
        # cached state's checkpoint before the parting point (which the slot that got the
        # state holds now).
        second = _prompt(engine, " Session two asks something else entirely, then:", FOX)
        other_session = _run(engine, second)
        # (checkpointed CHECKPOINTS_BEFORE_END tokens before the first prompt's end).
        assert other_session.cached_tokens >= len(first) - 2 * CHECKPOINTS_BEFORE_END[0]
        figures = _stats(engine)
        assert figures["hits_memory"] >= 1 and figures["restored_tokens"] >= len(first) - 8
        assert 0 < figures["bytes"] <= figures["budget_bytes"]
    finally:
        engine.close()
    _agree(again, _cold(first))
    _agree(other_session, _cold(second))


def test_a_restart_restores_a_prompt_from_disk(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    disk = {"prompt_cache_dir": str(folder), "prompt_cache_disk": 1 << 30}
    engine = open_embedded_engine(prompt_cache_min_tokens=MIN_TOKENS, **disk, **SETTINGS)
    try:
        prompt = _prompt(engine, " A question from before the restart.", FOX)
        assert _run(engine, prompt).cached_tokens == 0
        files = engine._prompt_cache.files
        assert files is not None and files.flush(60)
    finally:
        engine.close()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert len(list(folder.glob("*"))) >= 1

    engine = open_embedded_engine(prompt_cache_min_tokens=MIN_TOKENS, **disk, **SETTINGS)
    try:
        files = engine._prompt_cache.files
        assert files is not None and files.wait_ready(60)
        restored = _run(engine, prompt)
        assert restored.cached_tokens >= len(prompt) - 8, restored
        assert _stats(engine)["hits_disk"] == 1
    finally:
        engine.close()
    _agree(restored, _cold(prompt))


def test_two_sessions_sharing_a_system_prompt_keep_their_slots() -> None:
    engine = open_embedded_engine(
        prompt_cache_min_tokens=MIN_TOKENS, parallel=2, n_ctx=2048, kv_pool_tokens=4096
    )
    try:
        a1 = _prompt(engine, " Session A asks about the fox.", FOX)
        first = _run(engine, a1, 4)
        b1 = _prompt(engine, " Session B wonders about something else.", FOX)
        other = _run(engine, b1, 4)
        # B parts from A after the shared rules: it resumes from the cached state's
        # checkpoint before that point, in the empty slot, leaving A's slot alone.
        assert other.cached_tokens >= len(a1) - 2 * CHECKPOINTS_BEFORE_END[0], other
        a2 = [*a1, *first.token_ids, *engine.tokenize(" And then?", add_bos=False)]
        follow_up = _run(engine, a2, 4)
        assert follow_up.cached_tokens >= len(a1), follow_up
    finally:
        engine.close()
