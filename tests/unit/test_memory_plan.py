"""The defaults that fit the machine (models/sizing.plan) and the shared KV pool's accounts
(engine/llama/pool.py), without a model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import llama_cpp
import pytest

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama.pool import KvPool, youngest
from locallab_cpp.engine.llama.slots import Job, Slot
from locallab_cpp.engine.types import GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.models import sizing
from locallab_cpp.models.registry import ModelSpec, Registry

GB = 1024**3
GEMMA_270M = ModelSpec(id="g", path="g.gguf", size_bytes=253_113_024, context_length=32768,
                       layers=18, kv_heads=1, head_dim=256)  # fmt: skip
PHI_35_MINI = ModelSpec(id="phi", path="p.gguf", size_bytes=2_393_232_672,
                        context_length=131072, layers=32, kv_heads=32, head_dim=96)  # fmt: skip
MISTRAL_7B = ModelSpec(id="m", path="m.gguf", size_bytes=4_372_812_000, context_length=32768,
                       layers=32, kv_heads=8, head_dim=128)  # fmt: skip


def test_a_small_model_keeps_todays_context_and_four_slots_sharing_a_smaller_pool() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(), available=8 * GB)
    assert (plan.n_ctx_slot, plan.parallel) == (10240, 4)
    assert plan.pool_tokens == 10240 + 3 * 2048  # not 4 x 10240
    assert plan.kv_bytes == plan.pool_tokens * 18 * 2 * 256 * 2
    assert plan.fits and "4 slots" in plan.reason and "n_ctx auto" in plan.reason


def test_phi35_mini_without_gqa_fits_a_16gb_machine_with_a_smaller_pool() -> None:
    assert sizing.kv_bytes_per_token(PHI_35_MINI) == 384 * 1024
    roomy = sizing.plan(PHI_35_MINI, Settings(), available=10 * GB)
    assert roomy.fits and roomy.n_ctx_slot == 10240 and roomy.parallel == 4
    assert 10240 <= roomy.pool_tokens < 10240 + 3 * 2048
    assert "pool shrunk" in roomy.reason
    tight = sizing.plan(PHI_35_MINI, Settings(), available=6 * GB)
    assert tight.fits and 2048 <= tight.n_ctx_slot < 10240
    assert tight.pool_tokens == tight.n_ctx_slot and "context shrunk" in tight.reason
    assert tight.n_ctx_slot % sizing.GRANULE == 0


def test_mistral_7b_fits_a_16gb_machine() -> None:
    plan = sizing.plan(MISTRAL_7B, Settings(), available=8 * GB)
    assert plan.fits and plan.n_ctx_slot == 10240 and plan.parallel == 4
    assert plan.need_bytes <= 8 * GB * sizing.MEMORY_SHARE + 1


def test_a_model_too_big_for_the_machine_says_so() -> None:
    plan = sizing.plan(MISTRAL_7B, Settings(), available=3 * GB)
    assert not plan.fits and plan.n_ctx_slot == sizing.MIN_AUTO_CONTEXT
    assert "does not fit" in plan.reason


def test_values_the_user_set_are_kept() -> None:
    settings = Settings(n_ctx=32768, parallel=8, kv_pool_tokens=65536)
    plan = sizing.plan(PHI_35_MINI, settings, available=16 * GB)
    assert (plan.n_ctx_slot, plan.parallel, plan.pool_tokens) == (32768, 8, 65536)
    assert not plan.fits and "n_ctx set, parallel set, kv_pool_tokens set" in plan.reason


def test_a_pool_smaller_than_the_context_caps_it_and_gives_fewer_slots() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(n_ctx=4096, kv_pool_tokens=512), available=8 * GB)
    assert (plan.n_ctx_slot, plan.pool_tokens, plan.parallel) == (512, 512, 2)
    assert "capped" in plan.reason


def test_the_pool_never_exceeds_every_slots_context() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(n_ctx=512, parallel=8), available=8 * GB)
    assert plan.pool_tokens == 8 * 512


@pytest.mark.parametrize("available_gb", [4, 8, 16])
def test_every_registry_model_that_fits_at_all_fits_at_the_defaults(available_gb: int) -> None:
    available = available_gb * GB
    for spec in Registry.load(None):
        plan = sizing.plan(spec, Settings(), available=available)
        smallest = sizing.plan(spec, Settings(n_ctx=512, parallel=1), available=available)
        if smallest.fits:
            assert plan.fits, plan.reason
        # One formula: listings and can_load read the same figure.
        assert sizing.estimated_need(spec, Settings(), available=available) == plan.need_bytes


# --------------------------------------------------------------------------- the pool


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        llama_cpp,
        "llama_memory_seq_rm",
        lambda _mem, seq, p0, p1: calls.append((seq, p0, p1)) or True,
    )
    return calls


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _job(loop: asyncio.AbstractEventLoop, prompt_len: int) -> Job:
    inp = GenerationInput(tuple(range(1, prompt_len + 1)), SamplingParams(), 8)
    return Job(handle=GenerationHandle(loop=loop), inp=inp, max_tokens=8)


def test_idle_caches_are_cut_from_their_end_oldest_first(
    removed: list[tuple[int, int, int]],
) -> None:
    pool = KvPool(None, 100)
    old, new, busy = Slot(0, kv_tokens=[1] * 30), Slot(1, kv_tokens=[2] * 30), Slot(2)
    pool.touch(old)
    pool.touch(new)
    busy.kv_tokens[:] = [3] * 30
    busy.job = object()  # type: ignore[assignment]
    assert pool.make_room([old, new, busy], 10)  # 90 used, 10 free: nothing to do
    assert removed == [] and pool.evicted_total == 0
    assert pool.make_room([old, new, busy], 45)  # 35 short: all of old, 5 of new
    assert removed == [(0, 0, -1), (1, 25, -1)]
    assert (len(old.kv_tokens), len(new.kv_tokens), len(busy.kv_tokens)) == (0, 25, 30)
    assert pool.evicted_total == 35
    assert not pool.make_room([old, new, busy], 80)  # busy caches are never evicted
    assert pool.evict_all_idle([old, new, busy]) == 0


def test_admission_counts_busy_slots_whole_prompts(loop: asyncio.AbstractEventLoop) -> None:
    pool = KvPool(None, 100)
    waiting_copy, idle = Slot(0, kv_tokens=[1]), Slot(1, kv_tokens=[9] * 90)
    waiting_copy.job = _job(loop, 40)  # holds 1 token now, 40 once copied
    assert pool.committed([waiting_copy, idle]) == 41
    assert pool.admits([waiting_copy, idle], 58) and not pool.admits([waiting_copy, idle], 59)
    assert pool.room_for([waiting_copy, idle], 28) == 2


def test_the_youngest_busy_slot_gives_way(loop: asyncio.AbstractEventLoop) -> None:
    a, b, c = Slot(0), Slot(1), Slot(2)
    a.job, b.job = _job(loop, 3), _job(loop, 3)
    assert youngest([a, b, c], [5.0, 7.0, 9.0]) is b
    assert youngest([c], [0.0, 0.0, 1.0]) is None
