"""GenerationInput.n with the real embedded model, in-process: copies of one prompt share one
computation of it (its KV cells copied between the slots' streams with
llama_memory_seq_cp) and give what single runs give.

Every run opens a fresh engine: a second run on the same engine would reuse the cached
prompt and compute its last token in another batch shape, whose float rounding may pick
another token (see test_engine_batching.py), and the comparisons here are exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)
# A penalty changes the logits row in place: the copies must each start from the model's.
SAMPLED = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.3, seed=1234)
PROMPT = (
    "The following is a short story about a lighthouse keeper who finds a message in a "
    "bottle on a stormy night. The keeper opens it and reads:"
)
MAX_TOKENS = 20


def _open(parallel: int = 4, n_batch: int = 512) -> LlamaEngine:
    # Drafting off: whether it drafts follows measured step times, so under load the batch
    # shapes (and with them the float rounding of near-ties) would differ between runs.
    return open_embedded_engine(parallel=parallel, n_ctx=512, n_batch=n_batch, no_draft=True)


@dataclass
class Run:
    done: list[Completion]
    prompt_len: int
    prompt_tokens: int
    """Engine counter: prompt tokens of the sequences."""
    cached_tokens: int
    """Engine counter: prompt tokens that were not computed."""


def _fresh(
    sampling: SamplingParams,
    n: int,
    *,
    parallel: int = 4,
    cancel: tuple[int, ...] = (),
    cancel_admitted: bool = False,
    text: str = PROMPT,
    n_batch: int = 512,
) -> Run:
    """Generate ``n`` copies of ``text`` on a fresh engine; cancel the handles at ``cancel``
    right after submitting, or once the copies have slots (``cancel_admitted``)."""
    engine = _open(parallel, n_batch)
    try:
        prompt = tuple(engine.tokenize(text))

        async def run() -> list[Completion]:
            handles = engine.submit([GenerationInput(prompt, sampling, MAX_TOKENS, n=n)])
            assert len(handles) == n
            while cancel_admitted and engine.stats().active < n:
                await asyncio.sleep(0.001)
            for i in cancel:
                handles[i].cancel()
            kept = [h for i, h in enumerate(handles) if i not in cancel]
            return list(await asyncio.gather(*(h.result() for h in kept)))

        done = asyncio.run(run())
        stats = engine.stats()
        return Run(done, len(prompt), stats.prompt_tokens, stats.cached_prompt_tokens)
    finally:
        engine.close()


def test_greedy_copies_are_a_single_run_computed_once() -> None:
    copies = _fresh(GREEDY, 3)
    [single] = _fresh(GREEDY, 1).done
    texts = [c.text for c in copies.done]
    print("\ngreedy copies:", texts)
    assert single.token_ids, "nothing generated"
    assert [c.token_ids for c in copies.done] == [single.token_ids] * 3
    assert texts == [single.text] * 3
    # The prompt was computed once: the other copies got all of it by copy.
    length = copies.prompt_len
    assert [c.prompt_tokens for c in copies.done] == [length] * 3
    assert copies.done[0].cached_tokens == 0
    assert [c.cached_tokens for c in copies.done[1:]] == [length, length]
    assert copies.prompt_tokens == 3 * length
    assert copies.cached_tokens == 2 * length


def test_seeded_copies_sample_with_seed_plus_index() -> None:
    copies = _fresh(SAMPLED, 2)
    again = _fresh(SAMPLED, 2)
    singles = [_fresh(replace(SAMPLED, seed=SAMPLED.seed + i), 1).done[0] for i in range(2)]
    texts = [c.text for c in copies.done]
    print("\nseeded copies:", texts, "\nsingle runs:", [s.text for s in singles])
    assert [c.token_ids for c in copies.done] == [c.token_ids for c in again.done]
    assert texts[0] != texts[1]
    # Each copy samples from the very logits of its single run, with its seed.
    assert [c.token_ids for c in copies.done] == [s.token_ids for s in singles]
    assert copies.cached_tokens == copies.prompt_len


def test_more_copies_than_slots_compute_little_more_than_one_prompt() -> None:
    """Five copies over two slots: two, two and one get slots together; the later groups
    find the prompt in the earlier copies' caches and compute only its last token."""
    run = _fresh(GREEDY, 5, parallel=2)
    assert len(run.done) == 5
    assert all(c.token_ids for c in run.done)
    computed = sum(c.prompt_tokens - c.cached_tokens for c in run.done)
    assert computed <= run.prompt_len + 2, [c.cached_tokens for c in run.done]
    assert run.cached_tokens == sum(c.cached_tokens for c in run.done)


@pytest.mark.parametrize("cancel", [(0,), (1,), (0, 2)])
def test_cancelling_copies_leaves_the_others(cancel: tuple[int, ...]) -> None:
    """Cancelled before the copy: the source (0) hands its prompt to the next copy, a
    waiting copy just leaves; the rest give the single run's output."""
    run = _fresh(GREEDY, 4, cancel=cancel)
    [single] = _fresh(GREEDY, 1).done
    assert len(run.done) == 4 - len(cancel)
    assert [c.token_ids for c in run.done] == [single.token_ids] * len(run.done)


def test_a_source_cancelled_while_computing_the_prompt_hands_it_over() -> None:
    """A long prompt in 32-token steps: the source is cancelled while computing it, and the
    first waiting copy computes it instead, in the same steps a single run takes."""
    long_prompt = " ".join([PROMPT] * 6)
    run = _fresh(GREEDY, 3, cancel=(0,), cancel_admitted=True, text=long_prompt, n_batch=32)
    [single] = _fresh(GREEDY, 1, text=long_prompt, n_batch=32).done
    assert [c.token_ids for c in run.done] == [single.token_ids] * 2
    assert run.done[0].cached_tokens < run.prompt_len  # it computed the prompt itself
    assert run.done[1].cached_tokens == run.prompt_len
