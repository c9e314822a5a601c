"""How much memory a model needs once loaded, and the context, slots and KV pool that the
defaults choose so that it fits: ONE formula for the estimate, ``can_load``, the model
listings and the engine's own choice (loading.py calls :func:`plan`).

need = weights + tokenizer + logits + activations + runtime + KV cache + window checkpoints

- weights: the GGUF file's size (llama.cpp reads the tensors into memory; the few MiB of
  metadata the file also holds are not worth subtracting);
- tokenizer: llama.cpp's vocabulary tables, TOKENIZER_BYTES a token of the vocabulary;
- logits: the output buffer and the logits in the compute buffer, each ``rows x vocabulary
  x 4`` bytes for the logits rows a step may ask for (at most max(slots, LOGITS_ROWS));
- activations: the rest of llama.cpp's compute buffer, ACTIVATION_SHARE of the file for
  every CPU_UBATCH tokens computed at once;
- runtime: Python, the server and llama.cpp's own structures (RUNTIME_BYTES);
- KV cache: one pool shared by every slot (llama.cpp's unified cache). A token takes
  ``kv_heads x head_dim x (key + value element bytes)`` in each layer. Full-attention layers
  hold the whole pool (padded to 256 cells by llama.cpp); the sliding-window layers of a
  model that has them (Gemma 2/3: ``swa_window``, ``swa_layers`` in the registry) hold only
  ``pad256(min(pool, window x slots + n_ubatch))`` cells (llama-kv-cache-iswa.cpp);
- window checkpoints: for such a model the engine keeps up to CHECKPOINTS_PER_SLOT copies of
  one sequence's window per slot (``window`` cells of each sliding-window layer).

The architecture figures (``layers``, ``kv_heads``, ``head_dim``, ``swa_window``,
``swa_layers``, ``vocab_size``, ``context_length``) come from the GGUF header wherever the
file is on disk (callers pass ``gguf_shape.with_file_shape(spec, path)``), from the registry
where it is not; only without either is a token's bytes guessed from the file size. The
constants were measured with scripts/memory_check.py (docs/benchmarks.md, "Memory
estimate").

What is left at 0 (auto) in the settings is chosen here from the memory the machine can
give out (MEMORY_SHARE of it). The context starts at the model's trained context, as
llama-server's ``-c 0`` does (agents send prompts of 20,000 tokens); the pool starts at
one such context plus SHARED_TOKENS_PER_SLOT for each other slot. The pool first shrinks
towards one full slot context (fewer long requests at once, each still whole), then the
slot context shrinks (never below MIN_AUTO_CONTEXT, or the trained context when that is
smaller), then the slot count follows the pool, and drops (down to one) when even that
does not fit the share. So a model loads at the defaults whenever it fits at all with one
slot of that smallest context. Values the user set are kept as they are; the estimate then
says whether they fit. ``MemoryPlan.n_ctx_reason`` says how the context was chosen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from locallab_cpp import config
from locallab_cpp.config import Settings
from locallab_cpp.models.registry import ModelSpec

MIB = 1024 * 1024
GIB = 1024 * MIB
F16_BYTES = 2

# Without the architecture, a token's KV bytes are guessed as file size / this divisor.
# Measured on the registry's models it ranges from about 6,000 (phi-2, no grouped-query
# attention) to 40,000 (Qwen2.5 0.5B); 16,384 errs towards reporting too much.
KV_GUESS_DIVISOR = 16_384

RUNTIME_BYTES = 80 * MIB
"""Python with the server's libraries and llama.cpp's own start (peak resident memory of
`serve --no-model` after answering requests: 80 MiB)."""
TOKENIZER_BYTES = 176
"""llama.cpp's vocabulary tables, per token of the vocabulary (resident memory of a
vocabulary-only load: 169 for Gemma 3's 262,144 tokens, 179-182 for Llama 2's and Phi-3's
sentencepiece vocabularies; BPE vocabularies with their merges take 320-430)."""
DEFAULT_VOCAB = 262_144
"""Vocabulary assumed when the registry does not give one: the largest in common use."""
LOGITS_ROWS = 8
"""Logits rows a decode step may ask for with few slots (engine: n_outputs_max is
max(slots, drafting.ROWS))."""
ACTIVATION_SHARE = 0.01
"""llama.cpp's compute buffer beyond the logits, as a share of the file, for CPU_UBATCH
tokens at once (Gemma 3 270M: 1 MiB for a 241 MiB file; a 7B model about 1%)."""
CPU_UBATCH = 128
"""llama.cpp's n_ubatch on the CPU: the same value as engine/llama/loading.py's CPU_UBATCH
(models must not import the engine; a unit test keeps the two equal)."""
SWA_PAD = 256
"""llama.cpp pads every KV cache to this many cells."""

CHECKPOINTS_PER_SLOT = 2
"""Window checkpoints the engine keeps per slot for a sliding-window model (copies of one
sequence's cells in the window layers, engine/llama/windows.py); counted in the plan."""

MEMORY_LIMIT_ENV = "LOCALLAB_MEMORY_LIMIT"
"""The environment variable of Settings.memory_limit (bytes), as the tests set it."""
"""Bytes (or with a K, M or G suffix: KiB, MiB, GiB) the plan takes as the memory available
when the machine has more free: a cap for tests and for sharing a machine."""

DEFAULT_PARALLEL = 4
"""Slots when --parallel is 0 (auto) and the pool holds at least MIN_SLOT_SHARE each."""
SHARED_TOKENS_PER_SLOT = 2048
"""Pool cells the auto pool adds for each slot beyond the first: one request may use a whole
slot context, the others are expected to be shorter (most chat turns are)."""
MEMORY_SHARE = 0.8
"""Share of the available memory the auto choice plans to take: the rest is left to the
system and the other programs, whose needs change while the server runs."""
ASSUMED_CONTEXT = 8192 + 2048
"""The context a plan starts from when the registry does not give the trained one: LocalLab's
default max_length (8192) plus a 2048-token prompt. Only listings use it: at load the
GGUF's own trained context replaces it (loading.py plans again)."""
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
    """The KV cache (full-attention and sliding-window layers) and the window checkpoints."""
    need_bytes: int
    """Everything: the rest (file, buffers, runtime) + kv_bytes."""
    available_bytes: int
    reason: str
    """Why these values: what was set, what was chosen, and what memory allowed."""
    n_ctx_reason: str = ""
    """How n_ctx_slot was chosen: "the model's trained context", "shrunk from 32768 to fit
    3.1 GiB available", "set"... (the start of ``reason`` and /system/info's)."""
    checkpoint_bytes: int = 0
    """The part of kv_bytes that window checkpoints may take."""
    prompt_cache_bytes: int = 0
    """Host memory the prompt cache may hold: Settings.prompt_cache_ram, at most what the
    memory share leaves once the model is counted. Not in need_bytes: it never shrinks a
    context or refuses a load, and it takes memory only as prompts are cached."""

    @property
    def fits(self) -> bool:
        """Whether the need is within the available memory."""
        return self.need_bytes <= self.available_bytes


def _pad(cells: int, to: int = SWA_PAD) -> int:
    return -(-cells // to) * to


def layer_token_bytes(spec: ModelSpec, settings: Settings | None = None) -> int:
    """Bytes one token takes in one layer's KV cache (keys and values), in the cache types of
    ``settings`` (f16 when None); without the architecture, a guess for all layers."""
    if spec.layers and spec.kv_heads and spec.head_dim:
        return round(spec.kv_heads * spec.head_dim * config.cache_bytes_per_pair(settings))
    scale = config.cache_bytes_per_pair(settings) / (2 * F16_BYTES)
    return max(1, round(spec.size_bytes // KV_GUESS_DIVISOR * scale))


def _layers(spec: ModelSpec) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers) as the KV formula counts them."""
    if not (spec.layers and spec.kv_heads and spec.head_dim):
        return 1, 0  # the guess covers every layer
    swa = min(spec.swa_layers, spec.layers) if spec.swa_window else 0
    return spec.layers - swa, swa


def kv_bytes_per_token(spec: ModelSpec, settings: Settings | None = None) -> int:
    """Bytes of KV cache one token takes across all layers (exact when the registry gives
    the architecture): what a pool cell costs where every layer holds the whole pool."""
    full, swa = _layers(spec)
    return layer_token_bytes(spec, settings) * (full + swa)


@functools.cache
def _gpu_offload() -> bool:
    try:
        import llama_cpp
    except ImportError:  # pragma: no cover - llama-cpp-python is a dependency
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def ubatch_size(settings: Settings) -> int:
    """llama.cpp's n_ubatch as the engine sets it (loading.ubatch_size): CPU_UBATCH on the
    CPU, all of n_batch where layers are offloaded to a GPU."""
    if settings.n_gpu_layers != 0 and _gpu_offload():
        return settings.n_batch
    return min(settings.n_batch, CPU_UBATCH)


def swa_cells(spec: ModelSpec, pool: int, parallel: int, n_ubatch: int) -> int:
    """Cells of the sliding-window layers' cache (llama.cpp, swa_full off, one stream)."""
    if not spec.swa_window:
        return 0
    return _pad(min(_pad(pool), spec.swa_window * parallel + n_ubatch))


def checkpoint_bytes(spec: ModelSpec, settings: Settings, parallel: int, n_ctx_slot: int) -> int:
    """Memory the window checkpoints may take: CHECKPOINTS_PER_SLOT per slot, each one
    window of every sliding-window layer (none where a request's context fits a window,
    which the engine then never cuts: loading.py's ``windowed``)."""
    _, swa = _layers(spec)
    if not swa or spec.swa_window >= n_ctx_slot:
        return 0
    per = spec.swa_window * swa * layer_token_bytes(spec, settings)
    return CHECKPOINTS_PER_SLOT * parallel * per


def kv_bytes(spec: ModelSpec, settings: Settings, pool: int, parallel: int, n_ctx_slot: int) -> int:
    """THE KV formula: ``layer token bytes x (full layers x pool + window layers x window
    cells) + checkpoints`` for a pool of ``pool`` cells and ``parallel`` slots."""
    full, swa = _layers(spec)
    cells = full * _pad(pool) + swa * swa_cells(spec, pool, parallel, ubatch_size(settings))
    return layer_token_bytes(spec, settings) * cells + checkpoint_bytes(
        spec, settings, parallel, n_ctx_slot
    )


def fixed_bytes(spec: ModelSpec, settings: Settings, parallel: int, size: int = 0) -> int:
    """Everything but the KV cache: weights, tokenizer, logits, activations, runtime."""
    file_bytes = size or spec.size_bytes
    vocab = spec.vocab_size or DEFAULT_VOCAB
    logits = 2 * max(parallel, LOGITS_ROWS) * vocab * 4
    activations = int(file_bytes * ACTIVATION_SHARE * ubatch_size(settings) / CPU_UBATCH)
    return file_bytes + vocab * TOKENIZER_BYTES + logits + activations + RUNTIME_BYTES


def prompt_cache_bytes(settings: Settings, available: int, need: int) -> int:
    """The prompt cache's budget at a load: the setting, at most what MEMORY_SHARE of
    ``available`` leaves once ``need`` (the model) is counted."""
    return min(settings.prompt_cache_ram, max(0, int(available * MEMORY_SHARE) - need))


def memory_limit(settings: Settings | None = None) -> int:
    """The cap on the memory the plan may take as available (0: none): ``memory_limit``."""
    return settings.memory_limit if settings is not None else 0


def available_memory(settings: Settings | None = None) -> int:
    """Bytes the plan may count on now: what the machine can give out, capped by
    :func:`memory_limit`."""
    from locallab_cpp.sysinfo import available_memory as machine_free

    free = machine_free()
    limit = memory_limit(settings)
    return min(free, limit) if limit else free


def auto_pool(n_ctx_slot: int, parallel: int) -> int:
    """The pool when --kv-pool-tokens is 0, memory permitting: one whole slot context plus
    SHARED_TOKENS_PER_SLOT for every other slot (never more than every slot's context)."""
    return n_ctx_slot + (parallel - 1) * min(n_ctx_slot, SHARED_TOKENS_PER_SLOT)


def requested_context(spec: ModelSpec, settings: Settings) -> tuple[int, str]:
    """The context a request may use before memory is counted, and why: --n-ctx when set,
    else the model's trained context (ASSUMED_CONTEXT when the registry does not say)."""
    if settings.n_ctx:
        return settings.n_ctx, "set"
    if spec.context_length:
        return spec.context_length, "the model's trained context"
    return ASSUMED_CONTEXT, "assumed: the registry does not give the trained context"


def _amount(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB else f"{nbytes // MIB} MiB"


def _largest_pool(fits: Callable[[int], bool], upper: int) -> int:
    """The largest multiple of GRANULE up to ``upper`` for which ``fits(pool)`` (0 if none);
    ``fits`` must be monotone (true up to some pool, false beyond)."""
    low, high = 0, upper // GRANULE
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid * GRANULE):
            low = mid
        else:
            high = mid - 1
    return low * GRANULE


def plan(
    spec: ModelSpec, settings: Settings, available: int | None = None, size: int = 0
) -> MemoryPlan:
    """What the model gets at ``settings`` on a machine with ``available`` bytes free (None:
    :func:`available_memory` now). ``size`` is the file's size on disk when known (else the
    registry's)."""
    if available is None:
        available = available_memory(settings)
    trained = spec.context_length
    slot, why = requested_context(spec, settings)
    parallel = settings.parallel or DEFAULT_PARALLEL
    pool = settings.kv_pool_tokens or auto_pool(slot, parallel)
    # The auto choice plans with the slot count it starts from (never fewer than it ends
    # with): what is left of MEMORY_SHARE once everything but the KV cache is counted.
    budget = int(available * MEMORY_SHARE) - fixed_bytes(spec, settings, parallel, size)

    def within(cells: int, context: int) -> bool:
        return kv_bytes(spec, settings, cells, parallel, context) <= budget

    notes: list[str] = []
    if not settings.kv_pool_tokens and not within(pool, slot):
        shrunk = max(slot, _largest_pool(lambda cells: within(cells, slot), pool))
        if shrunk < pool:
            notes.append(f"pool shrunk from {pool} to fit memory")
            pool = shrunk
    if not settings.n_ctx and not settings.kv_pool_tokens and not within(pool, slot):
        # (A pool the user set is what takes the memory: a shorter context would not help.)
        floor = min(trained or MIN_AUTO_CONTEXT, MIN_AUTO_CONTEXT)
        shrunk = max(floor, _largest_pool(lambda cells: within(cells, cells), slot))
        if shrunk < slot:
            if within(shrunk, shrunk):
                why = f"shrunk from {slot} to fit {_amount(available)} available"
            else:  # not even the floor fits this many slots (fewer follow below)
                why = f"shrunk from {slot} to the auto floor, {_amount(available)} available"
            slot = pool = shrunk
    if slot > pool:  # a request can never use more cells than the pool has
        why = f"capped at the KV pool's {pool} tokens"
        slot = pool
    if not settings.parallel:
        parallel = min(DEFAULT_PARALLEL, max(1, pool // MIN_SLOT_SHARE), settings.n_batch)
        if parallel > 1 and not within(pool, slot):
            # Tight even at the smallest auto context: fewer slots (a sliding-window model's
            # windows and checkpoints are per slot), down to one.
            first = parallel
            while parallel > 1 and not within(pool, slot):
                parallel -= 1
            notes.append(f"{first} slots cut to {parallel} to fit memory")
    kv = kv_bytes(spec, settings, pool, parallel, slot)
    windows = checkpoint_bytes(spec, settings, parallel, slot)
    need = fixed_bytes(spec, settings, parallel, size) + kv
    cache = prompt_cache_bytes(settings, available, need)
    return MemoryPlan(
        n_ctx_slot=slot,
        parallel=parallel,
        pool_tokens=pool,
        kv_bytes=kv,
        need_bytes=need,
        available_bytes=available,
        reason=_reason(
            spec,
            settings,
            why,
            (slot, parallel, pool),
            (kv, windows, need, available),
            notes,
            cache,
        ),
        n_ctx_reason=why,
        checkpoint_bytes=windows,
        prompt_cache_bytes=cache,
    )


def _reason(
    spec: ModelSpec,
    settings: Settings,
    why: str,
    sizes: tuple[int, int, int],
    memory: tuple[int, int, int, int],
    notes: list[str],
    prompt_cache: int = 0,
) -> str:
    slot, parallel, pool = sizes
    kv, windows, need, available = memory
    origin = ", ".join(
        f"{name} {'set' if value else 'auto'}"
        for name, value in (
            ("n_ctx", settings.n_ctx),
            ("parallel", settings.parallel),
            ("kv_pool_tokens", settings.kv_pool_tokens),
        )
    )
    _, swa = _layers(spec)
    cache = (
        f"{(kv - windows) // MIB} MB, window layers holding "
        f"{swa_cells(spec, pool, parallel, ubatch_size(settings))} cells, + {windows // MIB} "
        "MB of window checkpoints"
        if swa
        else f"{kv // MIB} MB at {kv_bytes_per_token(spec, settings)} bytes a token"
    )
    reason = (
        f"n_ctx {slot} ({why}) per request, {parallel} slot{'s' if parallel != 1 else ''} "
        "sharing a "
        f"KV pool of {pool} tokens "
        f"({cache})"
        + (f", a prompt cache of up to {prompt_cache // MIB} MB" if prompt_cache else "")
        + f"; needs {need // MIB} MB of {available // MIB} MB available ({origin}"
        + (f"; {'; '.join(notes)}" if notes else "")
        + ")"
    )
    if need > available:
        reason += (
            "; does not fit: lower --n-ctx, --parallel or --kv-pool-tokens, or use q8_0 cache types"
        )
    return reason


def slot_context(spec: ModelSpec, settings: Settings, available: int | None = None) -> int:
    """Tokens of context per request, as the engine will configure it."""
    return plan(spec, settings, available).n_ctx_slot


def kv_cache_bytes(spec: ModelSpec, settings: Settings, available: int | None = None) -> int:
    """Bytes of the KV pool that every slot shares (with the window checkpoints)."""
    return plan(spec, settings, available).kv_bytes


def estimated_need(
    spec: ModelSpec, settings: Settings | None = None, size: int = 0, available: int | None = None
) -> int:
    """Bytes of memory the model is expected to take once loaded (see :func:`plan`).

    ``size`` is the file's size on disk when known (else the registry's figure).
    """
    return plan(spec, settings or Settings(), available, size).need_bytes
