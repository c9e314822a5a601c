"""Opening a GGUF with llama.cpp: backend start, model and context parameters, GPU layers,
weight repacking, and the facts about the load that /system/info reports."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import msgspec
from llama_cpp import _internals

from locallab_cpp.config import CACHE_TYPE_BYTES, Settings
from locallab_cpp.engine.llama import devices, drafting
from locallab_cpp.engine.llama.repack import AppliedRepack, apply_repack, resolve_repack
from locallab_cpp.errors import ModelUnavailable
from locallab_cpp.models import sizing
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.registry import ModelSpec

logger = logging.getLogger("locallab_cpp.engine")

ALL_LAYERS = 999
CPU_UBATCH = 128
"""Tokens llama.cpp computes at once on the CPU. Its compute buffer grows with this; 128
keeps the CPU's matrix kernels as busy as 512 (docs/benchmarks.md), and the server's peak
memory is lower than at 256."""

GGML_CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
"""ggml type ids (ggml.h) of the KV cache types the settings offer."""

_backend_lock = threading.Lock()
_backend_ready = False


def init_backend() -> None:
    """Start llama.cpp's backends once per process."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            from llama_cpp import _logger

            # llama.cpp logs every tensor at load; keep only its errors unless debugging.
            _logger.set_verbose(logger.isEnabledFor(logging.DEBUG))
            llama_cpp.llama_backend_init()
            _backend_ready = True


def release_freed_memory() -> None:
    """Hand the heap pages a freed model and context leave behind back to the system.

    glibc keeps freed memory in its arenas for reuse; a server that loads and unloads models
    would otherwise keep each old model's pages resident (soak test, docs/security.md).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (Metal, CUDA...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


def resolve_gpu_layers(requested: int | None) -> int:
    """The n_gpu_layers to use: all where offload is possible, unless the user said."""
    if requested is None:
        return ALL_LAYERS if gpu_offload_supported() else 0
    if requested < 0:
        return ALL_LAYERS
    return requested


def ubatch_size(n_batch: int, n_gpu_layers: int) -> int:
    """llama.cpp's n_ubatch: CPU_UBATCH on the CPU; a GPU computes its layers faster in
    bigger pieces and keeps the compute buffer in its own memory, so it gets all of n_batch."""
    if n_gpu_layers > 0 and gpu_offload_supported():
        return n_batch
    return min(n_batch, CPU_UBATCH)


def physical_cores() -> int:
    """Physical core count, the best default thread count for llama.cpp."""
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def kv_cache_bytes(
    metadata: Mapping[str, str], cells: int, k_bytes: float = 2.0, v_bytes: float = 2.0
) -> int:
    """Bytes of the KV cache for ``cells`` token cells, from the GGUF's metadata, with keys
    and values of ``k_bytes`` and ``v_bytes`` an element (f16: 2)."""
    arch = metadata.get("general.architecture", "")

    def number(key: str, default: int = 0) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:  # per-layer arrays: not worth parsing for an estimate
            return default

    layers = number("block_count")
    heads = number("attention.head_count", 1)
    kv_heads = number("attention.head_count_kv", heads)
    head_dim = number("embedding_length") // max(1, heads)
    key_len = number("attention.key_length", head_dim)
    value_len = number("attention.value_length", head_dim)
    return round(layers * kv_heads * (key_len * k_bytes + value_len * v_bytes) * cells)


@dataclass
class LoadedModel:
    """A llama.cpp model with its context: what the engine thread computes with."""

    model: _internals.LlamaModel
    ctx: _internals.LlamaContext
    n_ctx_slot: int
    """Tokens one request may use (prompt and answer)."""
    n_ctx_reason: str
    """How n_ctx_slot was chosen (MemoryPlan.n_ctx_reason)."""
    parallel: int
    """Slots (sequences decoded together)."""
    pool_tokens: int
    """KV cells all slots share (llama.cpp's unified KV cache)."""
    n_swa: int
    """The model's attention window in tokens (0: no sliding-window layers)."""
    windowed: bool
    """Whether sliding-window layers keep only a window (cuts need checkpoints: windows.py)."""
    n_gpu_layers: int
    threads: int
    repack: AppliedRepack
    """Held for the model's life: llama.cpp keeps the override list's pointer."""
    cache_types: tuple[str, str] = ("f16", "f16")
    """The KV cache's key and value number formats (--cache-type-k/v)."""
    path: Path | None = None
    """The GGUF it was read from (its header gives the shape the KV figure uses)."""
    prompt_cache_bytes: int = 0
    """The prompt cache's memory budget (MemoryPlan.prompt_cache_bytes)."""
    devices: devices.DevicePlan | None = None
    """The devices its layers may use where the load listed them (RPC workers: rpc.py)."""

    def details(self, spec: ModelSpec, settings: Settings) -> dict[str, Any]:
        """Facts about the load for /system/info."""
        metadata = self.model.metadata()
        shaped = with_file_shape(spec, self.path) if self.path is not None else spec
        if shaped.layers:  # the file or the registry gives the shape: the estimate's formula
            kv = sizing.kv_bytes(shaped, settings, self.pool_tokens, self.parallel, self.n_ctx_slot)
        else:  # every layer over the pool: an upper bound where windows are kept
            kv = kv_cache_bytes(
                metadata,
                self.pool_tokens,
                CACHE_TYPE_BYTES[self.cache_types[0]],
                CACHE_TYPE_BYTES[self.cache_types[1]],
            )
        return {
            "architecture": metadata.get("general.architecture", ""),
            "description": self.model.desc(),
            "n_params": self.model.n_params(),
            "n_vocab": self.model.n_vocab(),
            "n_layer": shaped.layers,
            "threads": self.threads,
            "n_batch": settings.n_batch,
            "quantization": spec.quantization,
            "kv_cache_bytes": kv,
            "n_ctx_reason": self.n_ctx_reason,
            "kv_pool_tokens": self.pool_tokens,
            "cache_type_k": self.cache_types[0],
            "cache_type_v": self.cache_types[1],
            "sliding_window": self.n_swa if self.windowed else 0,
            "repack": self.repack.plan.mode,
            "repack_reason": self.repack.plan.reason,
            "prompt_cache_budget_bytes": self.prompt_cache_bytes,
            **(self.devices.details() if self.devices is not None else {}),
        }

    def close(self) -> None:
        """Free the context, then the weights."""
        self.ctx.close()
        self.model.close()


def open_model(spec: ModelSpec, path: Path, settings: Settings) -> LoadedModel:
    """Load the GGUF at ``path`` and create a context whose slots share one KV pool, sized
    by :func:`locallab_cpp.models.sizing.plan` (the same formula the listings show)."""
    init_backend()
    placed = devices.plan_devices(spec, settings)  # RPC workers reached and attached first
    n_gpu_layers = resolve_gpu_layers(settings.n_gpu_layers)
    if placed is not None and not placed.devices:
        n_gpu_layers = 0  # RPC workers attached for other models; this one stays here
    threads = settings.threads or physical_cores()
    # Planned from the memory available before the weights are read: the plan counts the
    # file itself.
    available = sizing.available_memory(settings)
    size = path.stat().st_size

    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = n_gpu_layers
    # Read the weights instead of mapping them: repacked tensors would otherwise stay
    # resident twice (mapped file pages and the repacked copy).
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    plan = resolve_repack(
        settings.repack, path, gpu_offload=n_gpu_layers > 0 and gpu_offload_supported()
    )
    repack = apply_repack(mparams, plan)
    if placed is not None:
        devices.apply(mparams, placed)
    try:
        with devices.layers_logged(placed):
            model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
    except ValueError:
        raise ModelUnavailable(
            f"llama.cpp could not load the GGUF of model '{spec.id}'; the file may be "
            "damaged or of an architecture this llama.cpp does not support."
        ) from None
    # The GGUF's trained context is the one the auto context starts from (llama-server's
    # -c 0): the registry's may be missing, or name another file's.
    # The file's own figures (layers, KV heads, window...) replace the registry's.
    shaped = with_file_shape(spec, path)
    trained = model.n_ctx_train() or shaped.context_length
    memory = sizing.plan(
        msgspec.structs.replace(shaped, context_length=trained), settings, available, size
    )
    n_ctx_slot, parallel, pool = memory.n_ctx_slot, memory.parallel, memory.pool_tokens
    logger.info("model %s: %s", spec.id, memory.reason)

    cparams = llama_cpp.llama_context_default_params()
    # One KV pool for every slot: n_ctx is the pool, and each request's own cap
    # (n_ctx_slot) is enforced by the engine (engine.py) and the pool (pool.py).
    cparams.n_ctx = pool
    cparams.n_batch = settings.n_batch
    cparams.n_ubatch = ubatch_size(settings.n_batch, n_gpu_layers)
    n_swa = int(llama_cpp.llama_model_n_swa(model.model))
    # A window as long as a request's context never drops a cell it needs.
    windowed = 0 < n_swa < n_ctx_slot
    cparams.n_seq_max = parallel
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    # Sliding-window layers keep a window-sized cache; cutting a sequence back then needs
    # a checkpoint of its window (windows.py).
    cparams.swa_full = False
    cparams.type_k = GGML_CACHE_TYPES[settings.cache_type_k]
    cparams.type_v = GGML_CACHE_TYPES[settings.cache_type_v]
    # One KV stream that every slot shares: memory follows use, since a slot takes cells
    # only for the tokens it holds (pool.py keeps the accounts and evicts idle caches).
    # Attention then scans the shared cells, masked per sequence: with several slots busy
    # a step may cost more than with per-slot streams (not yet measured).
    cparams.kv_unified = True
    cparams.no_perf = True
    # At most one output (logits row) per slot per step, or ROWS when drafting fills a
    # step (see drafting.py). Without this bound llama.cpp sizes its compute buffer for
    # logits of every token of a full batch: with Gemma's 262k vocabulary that is 512 MB
    # that we would never use.
    cparams.n_outputs_max = max(cparams.n_seq_max, drafting.ROWS)
    try:
        ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
    except ValueError:
        model.close()
        raise ModelUnavailable(
            f"llama.cpp could not create a context for model '{spec.id}' "
            f"({pool} KV cells shared by {parallel} slots); lower --n-ctx or --kv-pool-tokens."
        ) from None
    return LoadedModel(
        model=model,
        ctx=ctx,
        n_ctx_slot=n_ctx_slot,
        n_ctx_reason=memory.n_ctx_reason,
        parallel=parallel,
        # llama.cpp may pad the cache (to 256 cells): the pool is what it really holds.
        pool_tokens=max(pool, int(llama_cpp.llama_n_ctx(ctx.ctx))),
        n_swa=n_swa,
        windowed=windowed,
        n_gpu_layers=n_gpu_layers if gpu_offload_supported() else 0,
        threads=threads,
        repack=repack,
        cache_types=(settings.cache_type_k, settings.cache_type_v),
        path=path,
        prompt_cache_bytes=memory.prompt_cache_bytes,
        devices=placed,
    )
