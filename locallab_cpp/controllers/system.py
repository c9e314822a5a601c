"""GET /health and GET /system/info."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from locallab_cpp import sysinfo
from locallab_cpp.engine.manager import ModelManager
from locallab_cpp.schemas import Health


class SystemController(Controller):
    """Liveness and machine facts."""

    tags = ["System"]

    @get("/health", summary="Liveness (cheap; never waits on generation)")
    async def health(self, models: NamedDependency[ModelManager]) -> Health:
        """Whether the server is up and which model is loaded."""
        current = models.current_id
        return Health(status="healthy", model_loaded=current is not None, model_id=current)

    @get("/system/info", summary="Machine, llama.cpp build and model details")
    async def system_info(
        self, models: NamedDependency[ModelManager], state: State
    ) -> dict[str, Any]:
        """CPU, memory, GPU offload, llama.cpp build, the loaded model and counters."""
        live = sysinfo.snapshot()
        llama = sysinfo.llama_static()
        engine = models.engine
        active_model: dict[str, Any] | None = None
        if engine is not None:
            info = engine.info
            stats = engine.stats()
            active_model = {
                "model_id": info.model_id,
                "name": info.name,
                "n_ctx": info.n_ctx,
                "n_ctx_train": info.n_ctx_train,
                "n_gpu_layers": info.n_gpu_layers,
                "parallel": info.parallel,
                "size_bytes": info.size_bytes,
                "chat_format": info.chat_format,
                "loaded_at": info.loaded_at,
                **dict(info.details),
                "active_sequences": stats.active,
                "queued_sequences": stats.queued,
                "generated_tokens": stats.generated_tokens,
                "prompt_tokens": stats.prompt_tokens,
                "cached_prompt_tokens": stats.cached_prompt_tokens,
            }
        return {
            **live,
            "gpu_info": {
                "available": llama["gpu_offload_supported"],
                "backends": llama["gpu_backends"],
                "backend_in_use": llama["backend"]
                if engine is None or engine.info.n_gpu_layers > 0
                else "CPU",
            },
            "active_model": active_model,
            "uptime": time.monotonic() - state.started_at,
            "request_count": state.request_count,
            "cpu": sysinfo.cpu_static(),
            "llama_cpp": llama,
            "loading": models.loading.model_id if models.loading else None,
        }
