"""The shared KV pool (engine/llama/pool.py) with the real embedded model, in-process: a pool
smaller than parallel x n_ctx serves its slots, a request may use its whole context while
the pool has room, idle slots' cached prompts are evicted when a new one needs the cells,
and a request that cannot fit gets a clear error while the others finish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from locallab_cpp.config import load_settings
from locallab_cpp.engine.llama.engine import LlamaEngine, open_llama_engine
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams
from locallab_cpp.errors import LocalLabError, PayloadTooLarge, ServerBusy
from locallab_cpp.models.registry import Registry

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)
N_CTX = 1024
POOL = 1024


def _open(parallel: int = 4, pool: int = POOL, n_ctx: int = N_CTX) -> LlamaEngine:
    settings = load_settings(
        {"parallel": parallel, "n_ctx": n_ctx, "kv_pool_tokens": pool, "threads": 2}, env={}
    )
    registry = Registry.load(None)
    spec = registry.get(registry.default_id)
    return open_llama_engine(spec, registry.ensure_local(spec), settings)


def _tokens(engine: LlamaEngine, n: int, seed: str) -> tuple[int, ...]:
    """A prompt of exactly ``n`` tokens, its text starting with ``seed``."""
    words = " ".join(f"{seed} {i}" for i in range(n))
    return tuple(engine.tokenize(words)[:n])


async def _run(
    engine: LlamaEngine, inputs: Sequence[GenerationInput]
) -> list[Completion | LocalLabError]:
    handles = engine.submit(inputs)
    return list(await asyncio.gather(*(h.result() for h in handles), return_exceptions=True))  # type: ignore[arg-type]


def _one(engine: LlamaEngine, prompt: tuple[int, ...], max_tokens: int) -> object:
    (done,) = asyncio.run(_run(engine, [GenerationInput(prompt, GREEDY, max_tokens)]))
    return done


def test_a_pool_smaller_than_every_slots_context_serves_every_slot() -> None:
    engine = _open()
    try:
        assert engine.info.details["kv_pool_tokens"] >= POOL
        assert engine.info.n_ctx == N_CTX and engine.info.parallel == 4
        prompts = [_tokens(engine, 40, word) for word in ("apple", "river", "cloud", "stone")]
        done = asyncio.run(_run(engine, [GenerationInput(p, GREEDY, 16) for p in prompts]))
        assert all(isinstance(c, Completion) and c.completion_tokens > 0 for c in done), done
    finally:
        engine.close()


def test_a_request_may_use_its_whole_context_while_the_pool_has_room() -> None:
    engine = _open()
    try:
        prompt = _tokens(engine, 900, "long")
        (done,) = asyncio.run(_run(engine, [GenerationInput(prompt, GREEDY, 100)]))
        assert isinstance(done, Completion), done
        assert done.prompt_tokens == 900 and done.completion_tokens > 0
    finally:
        engine.close()


def test_idle_caches_are_evicted_for_a_new_long_request() -> None:
    engine = _open()
    try:
        for word in ("first", "second", "third"):  # three idle slots hold 300 tokens each
            done = _one(engine, _tokens(engine, 300, word), 4)
            assert isinstance(done, Completion), done
        assert engine.stats().evicted_tokens == 0
        done = _one(engine, _tokens(engine, 800, "new"), 8)
        assert isinstance(done, Completion), done
        assert done.cached_tokens == 0 and done.prompt_tokens == 800
        assert engine.stats().evicted_tokens > 0
        slots = engine._loop.slots
        held = {tuple(s.kv_tokens[:2]): len(s.kv_tokens) for s in slots}
        assert sum(held.values()) <= engine._loop.pool.size
        first = _tokens(engine, 300, "first")
        third = _tokens(engine, 300, "third")
        assert held.get(first[:2], 0) <= held.get(third[:2], 0)
    finally:
        engine.close()


@pytest.mark.timeout(900)
def test_a_request_that_cannot_fit_fails_alone() -> None:
    engine = _open(parallel=2, pool=256, n_ctx=256)
    try:
        eog = [engine._loaded.model.token_eos()]
        eog += engine.tokenize("<end_of_turn>", add_bos=False)
        never_stop = SamplingParams(
            do_sample=False, repetition_penalty=1.0, logit_bias=tuple((t, -100.0) for t in eog)
        )

        async def both() -> tuple[list[Completion | LocalLabError], LocalLabError | None]:
            handles = engine.submit(
                [GenerationInput(_tokens(engine, 16, w), never_stop, 150) for w in ("a", "b")]
            )
            refused = None
            try:  # longer than the per-request context: refused at once, the others go on
                engine.submit([GenerationInput(_tokens(engine, 300, "big"), GREEDY, 4)])
            except LocalLabError as exc:
                refused = exc
            results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
            return list(results), refused  # type: ignore[arg-type]

        results, refused = asyncio.run(both())
        assert isinstance(refused, PayloadTooLarge)
        # Two sequences of 166 tokens cannot share 256 cells: one ends with ServerBusy (a
        # 503 with Retry-After), the other one finishes.
        finished = [r for r in results if isinstance(r, Completion)]
        busy = [r for r in results if isinstance(r, ServerBusy)]
        assert len(finished) == 1 and len(busy) == 1, results
        assert finished[0].finish_reason == "length" and finished[0].completion_tokens == 150
        assert "KV cache" in busy[0].detail
        # The engine still serves.
        after = _one(engine, _tokens(engine, 20, "c"), 4)
        assert isinstance(after, Completion)
    finally:
        engine.close()
