"""GET /health and GET /system/info."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from locallab_cpp import sysinfo
from locallab_cpp.api.locallab.protocol import (
    ActiveModel,
    CpuInfo,
    GpuInfo,
    Health,
    LlamaCppInfo,
    MemoryInfo,
    RpcDevice,
    RpcPlacement,
    SystemInfo,
)
from locallab_cpp.api.locallab.residents import resident_models
from locallab_cpp.api.metrics.gauges import generation_slots, resident_figures
from locallab_cpp.models.manager import ModelManager


class SystemController(Controller):
    """Liveness and machine facts."""

    tags = ["System"]

    @get("/health", summary="Liveness (cheap; never waits on generation)")
    async def health(self, models: NamedDependency[ModelManager]) -> Health:
        """Whether the server is up and which model is loaded."""
        engine = models.engine
        # Engine stats are read without waiting on the decode thread (LlamaEngine.stats).
        idle, processing = generation_slots(resident_figures(models))
        if engine is not None and engine.failed:
            # Not serving until it is opened again (at the next request or load).
            return Health(
                status="degraded",
                model_loaded=False,
                model_id=engine.info.model_id,
                slots_idle=idle,
                slots_processing=processing,
            )
        current = models.current_id
        return Health(
            status="healthy",
            model_loaded=current is not None,
            model_id=current,
            slots_idle=idle,
            slots_processing=processing,
        )

    @get("/system/info", summary="Machine, llama.cpp build and model details")
    async def system_info(self, models: NamedDependency[ModelManager], state: State) -> SystemInfo:
        """CPU, memory, GPU offload, llama.cpp build, the loaded model and counters."""
        live = sysinfo.snapshot()
        llama = sysinfo.llama_static()
        engine = models.engine
        active_model: ActiveModel | None = None
        if engine is not None:
            info = engine.info
            stats = engine.stats()
            details = info.details
            active_model = ActiveModel(
                model_id=info.model_id,
                name=info.name,
                n_ctx=info.n_ctx,
                n_ctx_train=info.n_ctx_train,
                n_gpu_layers=info.n_gpu_layers,
                parallel=info.parallel,
                size_bytes=info.size_bytes,
                chat_format=info.chat_format,
                loaded_at=info.loaded_at,
                architecture=str(details.get("architecture", "")),
                description=str(details.get("description", "")),
                n_params=int(details.get("n_params", 0)),
                n_vocab=int(details.get("n_vocab", 0)),
                threads=int(details.get("threads", 0)),
                n_batch=int(details.get("n_batch", 0)),
                quantization=str(details.get("quantization", "")),
                kv_cache_bytes=int(details.get("kv_cache_bytes", 0)),
                kv_pool_tokens=int(details.get("kv_pool_tokens", 0)),
                cache_type_k=str(details.get("cache_type_k", "f16")),
                cache_type_v=str(details.get("cache_type_v", "f16")),
                sliding_window=int(details.get("sliding_window", 0)),
                repack=str(details.get("repack", "on")),
                repack_reason=str(details.get("repack_reason", "")),
                n_ctx_reason=str(details.get("n_ctx_reason", "")),
                active_sequences=stats.active,
                queued_sequences=stats.queued,
                generated_tokens=stats.generated_tokens,
                prompt_tokens=stats.prompt_tokens,
                cached_prompt_tokens=stats.cached_prompt_tokens,
                drafted_tokens=stats.drafted_tokens,
                evicted_tokens=stats.evicted_tokens,
                prompt_cache=stats.prompt_cache,
                rpc=_rpc_placement(details),
            )
        offloading = engine is None or engine.info.n_gpu_layers > 0
        return SystemInfo(
            cpu_usage=live["cpu_usage"],
            memory_usage=live["memory_usage"],
            memory=MemoryInfo(**live["memory"]),
            gpu_info=GpuInfo(
                available=llama["gpu_offload_supported"],
                backends=llama["gpu_backends"],
                backend_in_use=llama["backend"] if offloading else "CPU",
            ),
            active_model=active_model,
            uptime=time.monotonic() - state.started_at,
            request_count=state.request_count,
            cpu=CpuInfo(**sysinfo.cpu_static()),
            llama_cpp=LlamaCppInfo(**llama),
            loading=models.loading.model_id if models.loading else None,
            resident_models=resident_models(models),
        )


def _rpc_placement(details: Mapping[str, Any]) -> RpcPlacement | None:
    workers = details.get("rpc_workers")
    if not workers:
        return None
    return RpcPlacement(
        workers=[str(w) for w in workers],
        devices=[RpcDevice(**d) for d in details.get("rpc_devices") or ()],
        layers={str(k): str(v) for k, v in (details.get("layer_devices") or {}).items()},
    )
