"""How much memory a model needs once loaded, and the context, slots and KV pool that the
defaults choose so that it fits: ONE formula for the estimate, ``can_load``, the model
listings and the engine's own choice (loading.py calls :func:`plan`).

Memory = the file + its working buffers + the KV pool. The KV pool is one cache shared by
every slot (llama.cpp's unified KV cache): ``pool_tokens`` cells, each storing a key and a
value vector per layer and KV head, so a token costs ``2 x layers x kv_heads x head_dim x
element bytes``. Registry entries that record their architecture get this exact figure;
for the others it is guessed from the file size.

What is left at 0 (auto) in the settings is chosen here from the memory the machine can
give out: the pool first shrinks towards one full slot context, then the slot context
shrinks (never below MIN_AUTO_CONTEXT, or the trained context when that is smaller), then
the slot count follows the pool. Values the user set are kept as they are; the estimate
then says whether they fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from locallab_cpp import config
from locallab_cpp.config import Settings
from locallab_cpp.models.registry import ModelSpec

F16_BYTES = 2

# Without the architecture, a token's KV bytes are guessed as file size / this divisor.
# Measured on the registry's models it ranges from about 6,000 (phi-2, no grouped-query
# attention) to 40,000 (Qwen2.5 0.5B); 16,384 errs towards reporting too much.
KV_GUESS_DIVISOR = 16_384

# Compute buffers and runtime beyond file and cache: llama.cpp's scratch buffers grow with
# the model, the rest (Python, the server) is roughly fixed.
BUFFER_SHARE = 0.10
RUNTIME_BYTES = 256 * 1024 * 1024

DEFAULT_PARALLEL = 4
"""Slots when --parallel is 0 (auto) and the pool holds at least MIN_SLOT_SHARE each."""
SHARED_TOKENS_PER_SLOT = 2048
"""Pool cells the auto pool adds for each slot beyond the first: one request may use a whole
slot context, the others are expected to be shorter (most chat turns are)."""
MEMORY_SHARE = 0.8
"""Share of the available memory the auto choice plans to take: the rest is left to the
system and the other programs, whose needs change while the server runs."""
MIN_AUTO_CONTEXT = 2048
"""The auto choice never shrinks the slot context below this (or the trained context)."""
MIN_SLOT_SHARE = 256
"""Pool cells per slot below which the auto choice gives fewer slots."""
GRANULE = 256
"""Auto sizes are multiples of this (llama.cpp pads its KV cache to 256 cells)."""


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """The context, slots and KV pool a model gets at given settings, with its memory."""

    n_ctx_slot: int
    """Tokens one request may use (prompt and answer): the per-request cap."""
    parallel: int
    """Sequences decoded together."""
    pool_tokens: int
    """KV cells shared by all slots."""
    kv_bytes: int
    need_bytes: int
    """File + buffers + KV pool."""
    available_bytes: int
    reason: str
    """Why these values: what was set, what was chosen, and what memory allowed."""

    @property
    def fits(self) -> bool:
        """Whether the need is within the available memory."""
        return self.need_bytes <= self.available_bytes


def kv_bytes_per_token(spec: ModelSpec, settings: Settings | None = None) -> int:
    """Bytes of KV cache one token takes (exact when the registry gives the architecture),
    in the cache types of ``settings`` (f16 keys and values when None)."""
    scale = config.cache_bytes_per_pair(settings) / (2 * F16_BYTES)
    if spec.layers and spec.kv_heads and spec.head_dim:
        return round(2 * spec.layers * spec.kv_heads * spec.head_dim * F16_BYTES * scale)
    return max(1, round(spec.size_bytes // KV_GUESS_DIVISOR * scale))


def auto_pool(n_ctx_slot: int, parallel: int) -> int:
    """The pool when --kv-pool-tokens is 0, memory permitting: one whole slot context plus
    SHARED_TOKENS_PER_SLOT for every other slot (never more than every slot's context)."""
    return n_ctx_slot + (parallel - 1) * min(n_ctx_slot, SHARED_TOKENS_PER_SLOT)


def _down(tokens: int) -> int:
    return tokens // GRANULE * GRANULE


def plan(
    spec: ModelSpec, settings: Settings, available: int | None = None, size: int = 0
) -> MemoryPlan:
    """What the model gets at ``settings`` on a machine with ``available`` bytes free (None:
    measure it now). ``size`` is the file's size on disk when known (else the registry's)."""
    if available is None:
        from locallab_cpp.sysinfo import available_memory

        available = available_memory()
    file_bytes = size or spec.size_bytes
    fixed = file_bytes + int(file_bytes * BUFFER_SHARE) + RUNTIME_BYTES
    per_token = kv_bytes_per_token(spec, settings)
    budget_tokens = max(0, int(available * MEMORY_SHARE) - fixed) // per_token
    trained = spec.context_length
    slot = config.slot_context(settings.n_ctx, trained)
    parallel = settings.parallel or DEFAULT_PARALLEL
    pool = settings.kv_pool_tokens or auto_pool(slot, parallel)
    notes: list[str] = []
    if not settings.kv_pool_tokens and pool > budget_tokens:
        shrunk = max(slot, _down(budget_tokens))
        if shrunk < pool:
            notes.append(f"pool shrunk from {pool} to fit memory")
            pool = shrunk
    if not settings.n_ctx and pool > budget_tokens:
        floor = min(trained or MIN_AUTO_CONTEXT, MIN_AUTO_CONTEXT)
        shrunk = max(floor, _down(budget_tokens))
        if shrunk < slot:
            notes.append(f"context shrunk from {slot} to fit memory")
            slot = shrunk
            if not settings.kv_pool_tokens:
                pool = slot
    if slot > pool:  # a request can never use more cells than the pool has
        notes.append(f"context capped at the pool's {pool} tokens")
        slot = pool
    if not settings.parallel:
        parallel = min(DEFAULT_PARALLEL, max(1, pool // MIN_SLOT_SHARE), settings.n_batch)
    kv = per_token * pool
    need = fixed + kv
    origin = ", ".join(
        f"{name} {'set' if value else 'auto'}"
        for name, value in (
            ("n_ctx", settings.n_ctx),
            ("parallel", settings.parallel),
            ("kv_pool_tokens", settings.kv_pool_tokens),
        )
    )
    mb = 1024 * 1024
    reason = (
        f"{slot} tokens per request, {parallel} slots sharing a KV pool of {pool} tokens "
        f"({kv // mb} MB at {per_token} bytes a token); needs {need // mb} MB of "
        f"{available // mb} MB available ({origin}"
        + (f"; {'; '.join(notes)}" if notes else "")
        + ")"
    )
    if need > available:
        reason += "; does not fit: lower --n-ctx or --kv-pool-tokens, or use q8_0 cache types"
    return MemoryPlan(
        n_ctx_slot=slot,
        parallel=parallel,
        pool_tokens=pool,
        kv_bytes=kv,
        need_bytes=need,
        available_bytes=available,
        reason=reason,
    )


def slot_context(spec: ModelSpec, settings: Settings, available: int | None = None) -> int:
    """Tokens of context per request, as the engine will configure it."""
    return plan(spec, settings, available).n_ctx_slot


def kv_cache_bytes(spec: ModelSpec, settings: Settings, available: int | None = None) -> int:
    """Bytes of the KV pool that every slot shares."""
    return plan(spec, settings, available).kv_bytes


def estimated_need(
    spec: ModelSpec, settings: Settings | None = None, size: int = 0, available: int | None = None
) -> int:
    """Bytes of memory the model is expected to take once loaded (see :func:`plan`).

    ``size`` is the file's size on disk when known (else the registry's figure).
    """
    return plan(spec, settings or Settings(), available, size).need_bytes
