"""Whether a model fits before it is loaded, and what would fit when it does not.

The check runs before the model being served is closed (ModelManager._replace asks the
factory's ``check_memory``): the memory that model gives back counts as available, the new
one is planned by :func:`locallab_cpp.models.sizing.plan` with the figures of its own GGUF
header (gguf_shape.py), and a plan that does not fit is an :class:`InsufficientMemory`
whose detail names settings that would fit, each computed with the same formula: a smaller
``--n-ctx`` (or ``--kv-pool-tokens`` where that is set), fewer ``--parallel`` slots, a
quantized KV cache. Values left at auto already shrink to fit, so a refusal means that the
values the user set, or the model itself, are too large.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo
from locallab_cpp.errors import InsufficientMemory
from locallab_cpp.models import sizing
from locallab_cpp.models.embed_sizing import embed_plan, file_architecture
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.registry import ModelSpec

MIN_SUGGESTED = 256
"""The smallest context or pool a suggestion names (llama.cpp's padding)."""


def _amount(nbytes: int) -> str:
    return (
        f"{nbytes / sizing.GIB:.1f} GiB" if nbytes >= sizing.GIB else f"{nbytes // sizing.MIB} MiB"
    )


def resident_bytes(info: EngineInfo) -> int:
    """What closing the engine of ``info`` gives back, by the estimate's own terms: its
    file, KV cache, tokenizer, logits and activations (not the runtime, which stays)."""
    details = info.details
    kv = int(details.get("kv_cache_bytes", 0) or 0)
    vocab = int(details.get("n_vocab", 0) or 0) or sizing.DEFAULT_VOCAB
    logits = 2 * max(info.parallel, sizing.LOGITS_ROWS) * vocab * 4
    activations = int(info.size_bytes * sizing.ACTIVATION_SHARE)
    return info.size_bytes + kv + vocab * sizing.TOKENIZER_BYTES + logits + activations


def gpu_share(n_gpu_layers: int | None, layers: int) -> float:
    """The part of a model's layers offloaded to the GPU with ``n_gpu_layers`` (None or
    negative: all of them, as the engine reads the setting on a GPU build)."""
    if n_gpu_layers is None or n_gpu_layers < 0:
        return 1.0
    if n_gpu_layers == 0:
        return 0.0
    return 1.0 if not layers else min(1.0, n_gpu_layers / layers)


def gpu_layers_of(info: EngineInfo) -> float:
    """The part of a resident model's layers on the GPU."""
    layers = int(info.details.get("n_layer", 0) or 0)
    return gpu_share(info.n_gpu_layers, layers) if info.n_gpu_layers > 0 else 0.0


def check_gpu(shaped: ModelSpec, settings: Settings, planned: sizing.MemoryPlan) -> None:
    """Raise InsufficientMemory when the offloaded layers (their share of the weights and
    KV cache) do not fit the GPU budget: ``gpu_memory_limit`` (the manager sets it to what
    the other resident models leave) else the GPUs' free memory. No GPU: nothing to do."""
    from locallab_cpp.sysinfo import gpu_free_memory

    share = gpu_share(settings.n_gpu_layers, shaped.layers)
    free = gpu_free_memory() if share else None
    if free is None:
        return
    room = min(free, settings.gpu_memory_limit) if settings.gpu_memory_limit else free
    need = int(planned.need_bytes * share)
    if need <= room:
        return
    layers = shaped.layers
    fewer = int(layers * room / planned.need_bytes) if layers else 0
    advice = (
        f"Offload fewer layers (--n-gpu-layers {fewer} of {layers}), or unload a model."
        if 0 < fewer < layers
        else "Run it on the CPU (--n-gpu-layers 0), or unload a model."
    )
    raise InsufficientMemory(
        f"Model '{shaped.id}' does not fit in the GPU's memory: its offloaded layers need "
        f"{_amount(need)} and {_amount(room)} is free. {advice}"
    )


def available_after(settings: Settings, freed: int) -> int:
    """The memory the plan may count on once ``freed`` bytes are given back."""
    from locallab_cpp.sysinfo import available_memory as machine_free

    free = machine_free() + max(0, freed)
    limit = sizing.memory_limit(settings)
    return min(free, limit) if limit else free


def _largest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest multiple of MIN_SUGGESTED below ``upper`` that fits (0 if none)."""
    low, high = 0, (upper - 1) // MIN_SUGGESTED
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid * MIN_SUGGESTED):
            low = mid
        else:
            high = mid - 1
    return low * MIN_SUGGESTED


def suggestions(
    spec: ModelSpec, settings: Settings, available: int, size: int, planned: sizing.MemoryPlan
) -> list[str]:
    """Settings that would fit ``available``, each changing one thing of ``settings``."""

    def fits(**changes: object) -> bool:
        changed = msgspec.structs.replace(settings, **changes)
        return sizing.plan(spec, changed, available, size).fits

    found: list[str] = []
    if settings.kv_pool_tokens:
        pool = _largest(lambda cells: fits(kv_pool_tokens=cells), planned.pool_tokens)
        if pool:
            found.append(f"--kv-pool-tokens {pool}")
    else:
        context = _largest(
            lambda cells: fits(n_ctx=cells), max(planned.n_ctx_slot, MIN_SUGGESTED + 1)
        )
        if context:
            found.append(f"--n-ctx {context}")
    slots = next(
        (n for n in range(planned.parallel - 1, 0, -1) if fits(parallel=n)),
        0,
    )
    if slots:
        found.append(f"--parallel {slots}")
    for kind in ("q8_0", "q4_0"):
        if (settings.cache_type_k, settings.cache_type_v) != (kind, kind) and fits(
            cache_type_k=kind, cache_type_v=kind
        ):
            found.append(f"--cache-type-k {kind} --cache-type-v {kind}")
            break
    return found


def check_fits(
    spec: ModelSpec, path: Path, settings: Settings, freed: int = 0
) -> sizing.MemoryPlan:
    """The plan for loading ``path`` once ``freed`` bytes are given back; raises
    InsufficientMemory, naming what would fit, when it does not fit. Blocking (the header)."""
    shaped = with_file_shape(spec, path)
    size = path.stat().st_size
    available = available_after(settings, freed)
    if spec.kind != "chat":  # no slots and no KV pool: one context of the model's size
        planned = embed_plan(
            shaped, settings, available, size, architecture=file_architecture(path)
        )
        if planned.fits:
            return planned
        raise InsufficientMemory(
            f"Model '{spec.id}' does not fit in memory: it needs "
            f"{_amount(planned.need_bytes)} ({planned.reason}) and {_amount(available)} is "
            "available. Free memory, lower --n-ctx or choose a smaller quantization."
        )
    planned = sizing.plan(shaped, settings, available, size)
    if planned.fits:
        check_gpu(shaped, settings, planned)
        return planned
    need, have = _amount(planned.need_bytes), _amount(available)
    found = suggestions(shaped, settings, available, size, planned)
    if found:
        advice = "It fits with " + " or ".join(found) + "."
    else:
        weights = sizing.fixed_bytes(shaped, settings, 1, size)
        advice = (
            f"Even one slot of the smallest context does not fit: the weights and buffers "
            f"alone take {_amount(weights)}. Free memory or choose a smaller "
            "quantization of the model."
        )
    raise InsufficientMemory(
        f"Model '{spec.id}' does not fit in memory: it needs {need} at these settings "
        f"(n_ctx {planned.n_ctx_slot}, {planned.parallel} slot"
        f"{'s' if planned.parallel != 1 else ''}, a KV pool of "
        f"{planned.pool_tokens} tokens in {settings.cache_type_k}/{settings.cache_type_v}) "
        f"and {have} is available. {advice}"
    )
