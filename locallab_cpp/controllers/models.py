"""Model management: /models/load, /models/current, /models/available, /models/unload."""

from __future__ import annotations

import asyncio

from litestar import Controller, get, post

from locallab_cpp.engine.manager import ModelManager
from locallab_cpp.errors import NotFound
from locallab_cpp.registry import ModelSpec
from locallab_cpp.schemas import (
    AvailableModel,
    AvailableModels,
    CurrentModel,
    LoadModelRequest,
    StatusResponse,
)
from locallab_cpp.sysinfo import available_memory

# Memory beyond the file a loaded model needs: KV cache, compute buffers, runtime.
# A rough allowance until the registry records per-model KV sizes.
LOAD_OVERHEAD_FACTOR = 1.25
LOAD_OVERHEAD_BYTES = 768 * 1024 * 1024


def estimated_need(spec: ModelSpec) -> int:
    """Bytes of memory a model is expected to take once loaded."""
    return int(spec.size_bytes * LOAD_OVERHEAD_FACTOR) + LOAD_OVERHEAD_BYTES


class ModelsController(Controller):
    """Load, unload and list models."""

    path = "/models"
    tags = ["Models"]

    @post("/load", status_code=200, summary="Load a model (returns when it is ready)")
    async def load(self, data: LoadModelRequest, models: ModelManager) -> StatusResponse:
        """Load ``model_id``; generations of the previous model end with an error."""
        engine = await models.load(data.model_id)
        info = engine.info
        return StatusResponse(
            status="success",
            model_id=info.model_id,
            message=f"Model '{info.model_id}' loaded ({info.n_ctx} tokens of context per "
            f"request, {info.parallel} parallel slots).",
        )

    @get("/current", summary="The loaded model")
    async def current(self, models: ModelManager) -> CurrentModel:
        """Details of the loaded model; 404 when none is loaded."""
        engine = models.engine
        if engine is None:
            raise NotFound("No model is currently loaded")
        info = engine.info
        return CurrentModel(
            model_id=info.model_id,
            name=info.name,
            description=info.description,
            is_loaded=True,
            n_ctx=info.n_ctx,
            n_gpu_layers=info.n_gpu_layers,
            size_bytes=info.size_bytes,
            chat_format=info.chat_format,
            loaded_at=info.loaded_at,
            parallel=info.parallel,
        )

    @get("/available", summary="Every model of the registry")
    async def available(self, models: ModelManager) -> AvailableModels:
        """Each registry entry, whether it is on disk, loaded, and fits in free memory."""
        current = models.current_id
        registry = models.registry
        free = available_memory()
        # local_path may touch the disk (hub cache look-ups): keep it off the event loop.
        paths = await asyncio.to_thread(lambda: [registry.local_path(s) for s in registry])
        entries = []
        for spec, path in zip(registry, paths, strict=True):
            is_loaded = spec.id == current
            size = path.stat().st_size if path is not None else spec.size_bytes
            entries.append(
                AvailableModel(
                    id=spec.id,
                    name=spec.display_name,
                    description=spec.description,
                    size_bytes=size,
                    is_downloaded=path is not None or spec.source == "package",
                    is_loaded=is_loaded,
                    can_load=is_loaded or estimated_need(spec) <= free,
                    parameters=spec.parameters,
                    quantization=spec.quantization,
                    source=spec.source,
                )
            )
        return AvailableModels(models=entries, current_model=current)

    @post("/unload", status_code=200, summary="Unload the current model")
    async def unload(self, models: ModelManager) -> StatusResponse:
        """Free the model's memory; succeeds also when nothing was loaded."""
        unloaded = await models.unload()
        message = f"Model '{unloaded}' unloaded." if unloaded else "No model was loaded."
        return StatusResponse(status="success", message=message, model_id=unloaded)
