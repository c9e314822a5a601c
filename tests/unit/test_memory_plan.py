"""The defaults that fit the machine (models/sizing.plan) and the shared KV pool's accounts
(engine/llama/pool.py), without a model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama.pool import KvPool, youngest
from locallab_cpp.engine.llama.slots import Job, Slot
from locallab_cpp.engine.types import GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.errors import ConfigError
from locallab_cpp.models import sizing
from locallab_cpp.models.registry import ModelSpec, Registry

GB = 1024**3
MIB = 1024**2
LAPTOP_16GB_AVAILABLE = 12 * GB
"""What a 16 GiB laptop has available with its system, a browser and an editor running."""
GEMMA_270M = ModelSpec(id="g", path="g.gguf", size_bytes=253_113_024, context_length=32768,
                       layers=18, kv_heads=1, head_dim=256, swa_window=512, swa_layers=15,
                       vocab_size=262_144)  # fmt: skip
MISTRAL_7B = ModelSpec(id="m", path="m.gguf", size_bytes=4_372_812_000, context_length=32768,
                       layers=32, kv_heads=8, head_dim=128, vocab_size=32768)  # fmt: skip


def _registry_spec(model_id: str) -> ModelSpec:
    return Registry.load(None).get(model_id)


def _window_cells(pool: int, slots: int) -> int:
    """llama-kv-cache-iswa.cpp: GGML_PAD(min(pool, n_swa x n_seq_max + n_ubatch), 256)."""
    return -(-min(pool, 512 * slots + sizing.ubatch_size(Settings())) // 256) * 256


def test_a_small_model_gets_its_trained_context_and_four_slots_sharing_a_smaller_pool() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(), available=8 * GB)
    assert (plan.n_ctx_slot, plan.parallel) == (32768, 4)  # llama-server's -c 0
    assert plan.pool_tokens == 32768 + 3 * 2048  # not 4 x 32768
    # 1 KiB a token a layer: 3 full layers hold the pool, 15 window layers a window each.
    windows = 2 * 4 * 512 * 15 * 1024
    assert plan.checkpoint_bytes == windows
    assert plan.kv_bytes == 1024 * (3 * 38912 + 15 * _window_cells(38912, 4)) + windows
    assert plan.fits and "4 slots" in plan.reason and "n_ctx auto" in plan.reason
    assert "window checkpoints" in plan.reason
    assert plan.n_ctx_reason == "the model's trained context"
    assert plan.reason.startswith("n_ctx 32768 (the model's trained context) per request")


def test_the_context_says_how_it_was_chosen() -> None:
    unknown = ModelSpec(id="u", path="u.gguf", size_bytes=10**8, layers=4, kv_heads=1,
                        head_dim=64)  # fmt: skip
    assumed = sizing.plan(unknown, Settings(), available=8 * GB)
    assert assumed.n_ctx_slot == sizing.ASSUMED_CONTEXT and "assumed" in assumed.n_ctx_reason
    assert sizing.plan(GEMMA_270M, Settings(n_ctx=4096), available=8 * GB).n_ctx_reason == "set"
    # A shrunk context names where it started and the memory it had.
    phi = _registry_spec("phi-3.5-mini-instruct")
    shrunk = sizing.plan(phi, Settings(), available=8 * GB)
    assert shrunk.n_ctx_reason == "shrunk from 131072 to fit 8.0 GiB available"
    assert f"n_ctx {shrunk.n_ctx_slot} (shrunk from 131072" in shrunk.reason
    small = sizing.plan(GEMMA_270M, Settings(), available=560 * MIB)
    assert small.n_ctx_reason == "shrunk from 32768 to the auto floor, 560 MiB available"


def test_the_window_cache_is_what_llama_cpp_allocates() -> None:
    # llama.cpp's own lines for the embedded model, 16384 cells, 4 slots, n_ubatch 128:
    #   size = 48.00 MiB (16384 cells, 3 layers, 4/1 seqs)
    #   size = 33.75 MiB ( 2304 cells, 15 layers, 4/1 seqs)
    # and with 1 slot: 768 cells for the 15 window layers.
    assert sizing.swa_cells(GEMMA_270M, 16384, 4, 128) == 2304
    assert sizing.swa_cells(GEMMA_270M, 16384, 1, 128) == 768
    assert sizing.swa_cells(GEMMA_270M, 1000, 4, 128) == 1024  # never more than the pool
    assert sizing.layer_token_bytes(GEMMA_270M) * 3 * 16384 == 48 * MIB
    assert sizing.layer_token_bytes(GEMMA_270M) * 15 * 2304 == round(33.75 * MIB)
    settings = Settings(n_ctx=512, parallel=4, kv_pool_tokens=16384)  # a window per request
    cells = 3 * 16384 + 15 * _window_cells(16384, 4)
    assert sizing.kv_bytes(GEMMA_270M, settings, 16384, 4, 512) == 1024 * cells
    # A model without windows: every layer holds the pool.
    assert sizing.swa_cells(MISTRAL_7B, 16384, 4, 128) == 0
    assert sizing.kv_bytes(MISTRAL_7B, Settings(), 16384, 4, 10240) == 16384 * 32 * 4096


def test_window_checkpoints_are_counted_for_each_slot() -> None:
    settings = Settings()
    one_window = 512 * 15 * 1024
    assert sizing.CHECKPOINTS_PER_SLOT == 2
    for slots in (1, 4):
        got = sizing.checkpoint_bytes(GEMMA_270M, settings, slots, 10240)
        assert got == sizing.CHECKPOINTS_PER_SLOT * slots * one_window
    # A request that fits in a window is never cut back (loading.py: not windowed).
    assert sizing.checkpoint_bytes(GEMMA_270M, settings, 4, 512) == 0
    assert sizing.checkpoint_bytes(MISTRAL_7B, settings, 4, 10240) == 0
    # q8_0 caches make windows and checkpoints smaller alike.
    q8 = Settings(cache_type_k="q8_0", cache_type_v="q8_0")
    assert sizing.checkpoint_bytes(GEMMA_270M, q8, 1, 10240) == round(
        sizing.checkpoint_bytes(GEMMA_270M, settings, 1, 10240) * 34 / 64
    )


@pytest.mark.parametrize(("n_batch", "n_gpu_layers"), [(512, 0), (64, 0), (512, None), (256, -1)])
def test_the_plan_uses_the_engines_ubatch(n_batch: int, n_gpu_layers: int | None) -> None:
    from locallab_cpp.engine.llama import loading

    assert sizing.CPU_UBATCH == loading.CPU_UBATCH
    settings = Settings(n_batch=n_batch, n_gpu_layers=n_gpu_layers)
    engine = loading.ubatch_size(n_batch, loading.resolve_gpu_layers(n_gpu_layers))
    assert sizing.ubatch_size(settings) == engine


def test_gemma_entries_record_llama_cpps_window_pattern() -> None:
    # src/models/gemma3.cpp: load_swa_pattern(ml, 6), layer il slides when il % 6 < 5; the
    # embedded GGUF says gemma3.attention.sliding_window = 512 and has no pattern key.
    for model_id, layers in (("gemma-3-270m", 18), ("gemma-3-1b-it", 26)):
        spec = _registry_spec(model_id)
        assert spec.layers == layers and spec.swa_window == 512
        assert spec.swa_layers == sum(1 for il in range(layers) if il % 6 < 5)
        assert spec.vocab_size == 262_144
    assert all(spec.vocab_size for spec in Registry.load(None))


def test_a_window_needs_its_layer_count(tmp_path: Path) -> None:
    for extra in ("swa_window = 512", "swa_layers = 15", "swa_window = 512\nswa_layers = 19"):
        models = tmp_path / "models.toml"
        models.write_text(
            f'[[models]]\nid = "w"\npath = "w.gguf"\nlayers = 18\n{extra}\n', encoding="utf-8"
        )
        with pytest.raises(ConfigError, match="swa_layers"):
            Registry.from_file(models)


@pytest.mark.parametrize(
    ("model_id", "available", "expected"),
    [
        # (context per request, slots, pool) chosen at the defaults. Mistral's trained
        # context (32768) fits whole with the shared pool; Phi-3.5's (131072) has no
        # grouped-query attention (384 KiB a token) and shrinks to what the memory holds,
        # still more than an agent's 19,000-token prompt needs.
        ("phi-3.5-mini-instruct", LAPTOP_16GB_AVAILABLE, (19712, 4, 19712)),
        ("mistral-7b-instruct-v0.3", LAPTOP_16GB_AVAILABLE, (32768, 4, 32768 + 3 * 2048)),
        # The same laptop with more programs open (8 GiB available): both shrink.
        ("phi-3.5-mini-instruct", 8 * GB, (11008, 4, 11008)),
        ("mistral-7b-instruct-v0.3", 8 * GB, (17920, 4, 17920)),
    ],
)
def test_phi35_mini_and_mistral_7b_load_at_the_defaults_on_a_16gb_laptop(
    model_id: str, available: int, expected: tuple[int, int, int]
) -> None:
    plan = sizing.plan(_registry_spec(model_id), Settings(), available=available)
    assert plan.fits, plan.reason
    assert (plan.n_ctx_slot, plan.parallel, plan.pool_tokens) == expected, plan.reason
    assert plan.need_bytes <= available * sizing.MEMORY_SHARE


def test_phi35_mini_shrinks_its_context_on_a_tighter_machine() -> None:
    phi = _registry_spec("phi-3.5-mini-instruct")
    assert sizing.kv_bytes_per_token(phi) == 384 * 1024
    tight = sizing.plan(phi, Settings(), available=5 * GB)
    assert tight.fits and 2048 <= tight.n_ctx_slot < 8192
    assert tight.pool_tokens == tight.n_ctx_slot
    assert tight.n_ctx_reason == "shrunk from 131072 to fit 5.0 GiB available"
    assert tight.n_ctx_slot % sizing.GRANULE == 0


def test_a_model_too_big_for_the_machine_says_so() -> None:
    plan = sizing.plan(MISTRAL_7B, Settings(), available=3 * GB)
    assert not plan.fits and plan.n_ctx_slot == sizing.MIN_AUTO_CONTEXT
    assert plan.parallel == 1 and "does not fit" in plan.reason
    assert plan.n_ctx_reason == "shrunk from 32768 to the auto floor, 3.0 GiB available"


def test_when_memory_is_tight_one_slot_is_what_gives_last() -> None:
    floor = sizing.MIN_AUTO_CONTEXT
    one = sizing.plan(GEMMA_270M, Settings(n_ctx=floor, parallel=1), available=64 * GB)
    available = one.need_bytes + 4 * MIB  # fits with one slot, not within MEMORY_SHARE
    plan = sizing.plan(GEMMA_270M, Settings(), available=available)
    assert plan.fits and (plan.n_ctx_slot, plan.parallel) == (floor, 1), plan.reason
    assert "cut to 1" in plan.reason


def test_values_the_user_set_are_kept() -> None:
    settings = Settings(n_ctx=32768, parallel=8, kv_pool_tokens=65536)
    plan = sizing.plan(_registry_spec("phi-3.5-mini-instruct"), settings, available=16 * GB)
    assert (plan.n_ctx_slot, plan.parallel, plan.pool_tokens) == (32768, 8, 65536)
    assert not plan.fits and "n_ctx set, parallel set, kv_pool_tokens set" in plan.reason


def test_a_pool_smaller_than_the_context_caps_it_and_gives_fewer_slots() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(n_ctx=4096, kv_pool_tokens=512), available=8 * GB)
    assert (plan.n_ctx_slot, plan.pool_tokens, plan.parallel) == (512, 512, 2)
    assert plan.n_ctx_reason == "capped at the KV pool's 512 tokens"


def test_the_pool_never_exceeds_every_slots_context() -> None:
    plan = sizing.plan(GEMMA_270M, Settings(n_ctx=512, parallel=8), available=8 * GB)
    assert plan.pool_tokens == 8 * 512


def test_a_memory_limit_caps_the_available_memory() -> None:
    from locallab_cpp.config import load_settings

    assert sizing.memory_limit(Settings()) == 0
    capped = load_settings({}, env={sizing.MEMORY_LIMIT_ENV: str(300 * MIB)})
    assert sizing.memory_limit(capped) == 300 * MIB
    assert sizing.available_memory(capped) == 300 * MIB  # this machine has more free
    plan = sizing.plan(GEMMA_270M, capped)
    assert plan.available_bytes == 300 * MIB and "of 300 MB available" in plan.reason


def _smallest(spec: ModelSpec) -> Settings:
    """The least a model can load with at the auto floor: one slot of the floor context."""
    floor = min(spec.context_length or sizing.MIN_AUTO_CONTEXT, sizing.MIN_AUTO_CONTEXT)
    return Settings(n_ctx=floor, parallel=1, kv_pool_tokens=floor)


def test_every_registry_model_that_fits_at_all_fits_at_the_defaults() -> None:
    for spec in Registry.load(None):
        smallest_need = sizing.plan(spec, _smallest(spec), available=64 * GB).need_bytes
        # Around the edge (every 16 MiB up to 256 MiB past it) and the usual machines.
        edge = range(smallest_need - 64 * MIB, smallest_need + 256 * MIB, 16 * MIB)
        for available in [*edge, 2 * GB, 4 * GB, 8 * GB, 12 * GB, 16 * GB, 32 * GB]:
            plan = sizing.plan(spec, Settings(), available=available)
            assert plan.fits == (smallest_need <= available), (spec.id, available, plan.reason)
            # One formula: listings and can_load read the same figure.
            need = sizing.estimated_need(spec, Settings(), available=available)
            assert need == plan.need_bytes


def test_the_estimate_counts_what_serving_needs_beyond_the_cache() -> None:
    # Calibrated against peak RSS (docs/benchmarks.md): with 10240 tokens a request (the
    # defaults then; scripts/memory_check.py) the embedded model took 499 MiB, its f16
    # copy 775 MiB; at today's defaults (32768) the embedded model took 553 MiB after a
    # 19,000-token prompt (test_e2e_agent_context.py).
    then = Settings(n_ctx=10240)
    for size, settings, peak in (
        (253_113_024, then, 499 * MIB),
        (542_833_344, then, 775 * MIB),
        (253_113_024, Settings(), 553 * MIB),
    ):
        need = sizing.plan(GEMMA_270M, settings, available=8 * GB, size=size).need_bytes
        assert abs(need - peak) <= 0.10 * peak, (size, need / MIB)
        assert need >= peak  # errs towards too much


# --------------------------------------------------------------------------- the pool


@pytest.fixture
def removed() -> list[tuple[int, int]]:
    return []


def _pool(size: int, calls: list[tuple[int, int]] | None = None) -> KvPool:
    """A pool whose cuts (windows.Windows.truncate) are recorded as (seq_id, kept)."""

    def truncate(slot: Slot, keep: int) -> int:
        if calls is not None:
            calls.append((slot.seq_id, keep))
        del slot.kv_tokens[keep:]
        return keep

    return KvPool(size, truncate)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _job(loop: asyncio.AbstractEventLoop, prompt_len: int) -> Job:
    inp = GenerationInput(tuple(range(1, prompt_len + 1)), SamplingParams(), 8)
    return Job(handle=GenerationHandle(loop=loop), inp=inp, max_tokens=8)


def test_idle_caches_are_cut_from_their_end_oldest_first(
    removed: list[tuple[int, int]],
) -> None:
    pool = _pool(100, removed)
    old, new, busy = Slot(0, kv_tokens=[1] * 30), Slot(1, kv_tokens=[2] * 30), Slot(2)
    pool.touch(old)
    pool.touch(new)
    busy.kv_tokens[:] = [3] * 30
    busy.job = object()  # type: ignore[assignment]
    assert pool.make_room([old, new, busy], 10)  # 90 used, 10 free: nothing to do
    assert removed == [] and pool.evicted_total == 0
    assert pool.make_room([old, new, busy], 45)  # 35 short: all of old, 5 of new
    assert removed == [(0, 0), (1, 25)]
    assert (len(old.kv_tokens), len(new.kv_tokens), len(busy.kv_tokens)) == (0, 25, 30)
    assert pool.evicted_total == 35
    assert not pool.make_room([old, new, busy], 80)  # busy caches are never evicted
    assert pool.evict_all_idle([old, new, busy]) == 0


def test_admission_counts_busy_slots_whole_prompts(loop: asyncio.AbstractEventLoop) -> None:
    pool = _pool(100)
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
