"""The continuous-batching engine in-process, with the real embedded model: greedy output
alone against beside seven others, compared token by token.

llama.cpp computes a batch of several sequences with other matrix kernels than a single
sequence, and the float rounding differs; a tiny model with near-tied logits can then pick
another token. This test measures how often that happens over 16 prompts and from which
token, prints it, and writes it as JSON where LOCALLAB_DIVERGENCE_REPORT names a file
(scripts/bench.py's figures in docs/benchmarks.md quote it).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest
from it_support import DIVERGENCE_PROMPTS, open_embedded_engine

from locallab_cpp.engine.llama.drafting import DraftController
from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)
MAX_TOKENS = 16
PROMPTS = DIVERGENCE_PROMPTS


def _open_engine() -> LlamaEngine:
    return open_embedded_engine(parallel=8, n_ctx=512)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = _open_engine()
    yield engine
    engine.close()


def _first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    if a == b:
        return None
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


async def _run(engine: LlamaEngine, prompts: list[str]) -> list[Completion]:
    inputs = [GenerationInput(tuple(engine.tokenize(p)), GREEDY, MAX_TOKENS) for p in prompts]
    handles = engine.submit(inputs)
    return list(await asyncio.gather(*(h.result() for h in handles)))


@pytest.mark.timeout(900)
def test_greedy_alone_vs_beside_seven_others(engine: LlamaEngine) -> None:
    async def measure() -> tuple[list[Completion], list[Completion]]:
        alone = [(await _run(engine, [p]))[0] for p in PROMPTS]
        batched = await _run(engine, PROMPTS[:8]) + await _run(engine, PROMPTS[8:])
        return alone, batched

    alone, batched = asyncio.run(measure())
    firsts = [
        _first_difference(a.token_ids, b.token_ids) for a, b in zip(alone, batched, strict=True)
    ]
    differing = {PROMPTS[i]: idx for i, idx in enumerate(firsts) if idx is not None}
    report = {
        "prompts": len(PROMPTS),
        "max_tokens": MAX_TOKENS,
        "identical": len(PROMPTS) - len(differing),
        "first_differing_token": differing,
    }
    print("\ngreedy alone vs batch of 8:", json.dumps(report, indent=1))
    if path := os.environ.get("LOCALLAB_DIVERGENCE_REPORT_TOKENS"):
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    # Every output is a real greedy continuation of its own prompt: both runs agree on the
    # first token for most prompts, and many are identical. With one KV cache shared by the
    # slots (kv_unified, issue 12) attention runs over cells whose number and placement
    # depend on the other sequences, so rounding differs more than with per-slot streams
    # (measured here 7/16 identical, 10/16 with per-slot streams; llama-server's unified
    # cache behaves alike). test_greedy_batch_is_reproducible shows it is not state leaking.
    assert all(len(c.token_ids) > 0 for c in alone + batched)
    assert report["identical"] >= len(PROMPTS) * 3 // 8, report
    assert sum(1 for idx in differing.values() if idx == 0) <= 4, report


def test_greedy_batch_is_reproducible() -> None:
    """The same batch on two fresh engines gives the same tokens: the divergence above is
    rounding that depends on the batch's make-up, not state leaking between sequences.

    Fresh engines, because a second run on the same engine reuses the cached prompts and so
    computes them in another batch shape, which may round differently again.
    """

    def one_run() -> list[tuple[int, ...]]:
        engine = _open_engine()
        try:
            return [c.token_ids for c in asyncio.run(_run(engine, PROMPTS[:8]))]
        finally:
            engine.close()

    assert one_run() == one_run()


# Text that repeats itself, where prompt-lookup guesses are right: the controller then
# keeps drafting, so the test sees guesses kept whatever the machine's timing.
REPETITIVE = [
    "red green blue, red green blue, red green blue, red green blue,",
    "1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4,",
    "la la la la la la la la la la la la",
    "def f():\n    return 1\n\ndef f():\n    return 1\n\ndef f():\n",
]


@pytest.mark.parametrize("n_ctx", [512, 2048])
def test_drafting_gives_greedy_output_and_uses_its_guesses(
    monkeypatch: pytest.MonkeyPatch, n_ctx: int
) -> None:
    """Four greedy sequences decoded with prompt-lookup guesses give the greedy output of the
    same four without (up to the batch rounding measured above), and guesses were kept.

    The controller is told to draft at every step: whether drafting pays is a matter of
    timing, which a busy test machine would make a matter of luck. With n_ctx 2048 Gemma's
    sliding-window layers keep only their 512-token window: the prompts are repeated past
    it and two slots share a 1280-cell window cache, so guesses land in reused cells and
    rejected ones are cut from a window cache (engine/llama/windows.py says why that is
    safe).
    """
    windowed = n_ctx > 512
    prompts = [(p + " ") * 30 if windowed else p for p in REPETITIVE]
    monkeypatch.setattr(DraftController, "should_draft", lambda _self, _n: True)

    def four(no_draft: bool) -> tuple[list[tuple[int, ...]], int]:
        slots = 2 if windowed else 8
        engine = open_embedded_engine(parallel=slots, n_ctx=n_ctx, no_draft=no_draft)
        try:
            assert engine._loop.windows.enabled is windowed
            inputs = [GenerationInput(tuple(engine.tokenize(p)), GREEDY, 48) for p in prompts]

            async def run() -> list[Completion]:
                handles = engine.submit(inputs)
                return list(await asyncio.gather(*(h.result() for h in handles)))

            done = asyncio.run(run())
            return [c.token_ids for c in done], engine.stats().drafted_tokens
        finally:
            engine.close()

    drafted, kept = four(no_draft=False)
    plain, none_kept = four(no_draft=True)
    assert none_kept == 0
    assert kept > 0, "no guess was ever kept"
    assert all(0 < len(t) <= 48 for t in drafted)
    same = sum(1 for a, b in zip(drafted, plain, strict=True) if a == b)
    first_tokens = sum(1 for a, b in zip(drafted, plain, strict=True) if a[:1] == b[:1])
    print(f"\ndrafting: {kept} guessed tokens kept; {same}/4 outputs identical to plain")
    assert first_tokens == 4
    assert same >= 3
