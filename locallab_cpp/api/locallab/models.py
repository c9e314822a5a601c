"""Model management: /models/load, /models/load/progress, /models/current,
/models/available, /models/unload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from locallab_cpp.api.locallab.protocol import (
    AvailableModel,
    AvailableModels,
    CurrentModel,
    LoadModelRequest,
    LoadProgressBody,
    StatusResponse,
)
from locallab_cpp.api.locallab.residents import resident_models
from locallab_cpp.config import Settings
from locallab_cpp.errors import NotFound
from locallab_cpp.http.sse import DONE, EventStream, event_stream
from locallab_cpp.models import sizing
from locallab_cpp.models.catalog import catalog
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.progress import ProgressSnapshot
from locallab_cpp.models.registry import ModelSpec

PROGRESS_INTERVAL_S = 0.5
"""How often the progress stream sends an event while a load runs."""


def estimated_need(spec: ModelSpec, settings: Settings | None = None, size: int = 0) -> int:
    """Bytes of memory a model is expected to take once loaded (see :mod:`sizing`)."""
    return sizing.estimated_need(spec, settings, size)


def progress_body(snapshot: ProgressSnapshot | None) -> LoadProgressBody:
    """The JSON form of a load's progress (``idle`` when no load ever ran)."""
    if snapshot is None:
        return LoadProgressBody(
            loading=False,
            model_id=None,
            state="idle",
            bytes_done=0,
            bytes_total=0,
            percent=None,
            started_at=None,
            elapsed_s=None,
        )
    end = time.time() if snapshot.active else snapshot.updated_at
    return LoadProgressBody(
        loading=snapshot.active,
        model_id=snapshot.model_id,
        state=snapshot.state,
        bytes_done=snapshot.bytes_done,
        bytes_total=snapshot.bytes_total,
        percent=snapshot.percent,
        started_at=snapshot.started_at,
        elapsed_s=round(end - snapshot.started_at, 3),
        detail=snapshot.detail,
    )


def _active(models: ModelManager) -> LoadProgressBody | None:
    loading = models.loading
    return progress_body(loading.snapshot()) if loading is not None else None


async def _progress_events(models: ModelManager) -> AsyncIterator[bytes]:
    last: bytes | None = None
    while True:
        body = progress_body(models.progress())
        payload = msgspec.json.encode(body)
        if payload != last:
            yield b"data: " + payload + b"\n\n"
            last = payload
        if not body.loading:
            break
        await asyncio.sleep(PROGRESS_INTERVAL_S)
    yield DONE


class ModelsController(Controller):
    """Load, unload and list models."""

    path = "/models"
    tags = ["Models"]

    @post("/load", status_code=200, summary="Load a model (returns when it is ready)")
    async def load(
        self, data: JSONBody[LoadModelRequest], models: NamedDependency[ModelManager]
    ) -> StatusResponse:
        """Load ``model_id``, downloading it first if it is not on disk; generations of the
        previous model end with an error once the new one is ready to load."""
        engine = await models.load(data.model_id)
        info = engine.info
        return StatusResponse(
            status="success",
            model_id=info.model_id,
            message=f"Model '{info.model_id}' loaded ({info.n_ctx} tokens of context per "
            f"request, {info.parallel} parallel slots).",
        )

    @get("/load/progress", summary="Progress of the model load under way")
    async def load_progress(
        self,
        models: NamedDependency[ModelManager],
        stream: bool = Parameter(
            default=False,
            description="Send Server-Sent Events until the load ends, then data: [DONE].",
        ),
    ) -> LoadProgressBody | EventStream:
        """The load under way (state downloading, verifying or loading, with bytes done and
        total), else how the last one ended (ready or failed), else ``idle``."""
        if stream:
            return event_stream(_progress_events(models))
        return progress_body(models.progress())

    @get("/current", summary="The default model, and every resident one")
    async def current(self, models: NamedDependency[ModelManager]) -> CurrentModel:
        """Details of the default model (the one loaded last through /models/load, which
        requests naming no model get) and, in ``resident``, of every model held in memory;
        while the default is not loaded but one is on its way, its progress; else 404."""
        engine = models.resident(models.current_id) if models.current_id else None
        loading = _active(models)
        if engine is None:
            if loading is None or loading.model_id is None:
                idle = models.idle_unloaded
                raise NotFound(
                    "No model is currently loaded"
                    if idle is None
                    else f"No model is currently loaded: '{idle}' was unloaded after being "
                    "idle (--keep-alive); the next request loads it again"
                )
            spec = models.registry.get(loading.model_id)
            return CurrentModel(
                model_id=spec.id,
                name=spec.display_name,
                description=spec.description,
                is_loaded=False,
                loading=loading,
                resident=resident_models(models),
            )
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
            loading=loading,
            resident=resident_models(models),
        )

    @get("/available", summary="Every model of the registry")
    async def available(self, models: NamedDependency[ModelManager]) -> AvailableModels:
        """Each registry entry: on disk or not, its size, whether it is loaded, whether the
        machine's available memory holds it, and the progress of one being loaded."""
        current = models.current_id
        loading = _active(models)
        free = sizing.available_memory(models.settings)
        # The catalog touches the disk (hub cache look-ups): keep it off the event loop.
        listed = await asyncio.to_thread(catalog, models.registry, models.settings)
        entries = []
        for entry in listed:
            spec = entry.spec
            is_loaded = models.resident(spec.id) is not None
            entries.append(
                AvailableModel(
                    id=spec.id,
                    name=spec.display_name,
                    description=spec.description,
                    size_bytes=entry.size_bytes,
                    is_downloaded=entry.is_downloaded,
                    is_loaded=is_loaded,
                    can_load=is_loaded or entry.estimated_memory_bytes <= free,
                    parameters=spec.parameters,
                    quantization=spec.quantization,
                    source=spec.source,
                    size_on_disk_bytes=entry.size_on_disk_bytes,
                    estimated_memory_bytes=entry.estimated_memory_bytes,
                    context_length=spec.context_length,
                    repo=spec.repo,
                    file=spec.file,
                    progress=loading if loading and loading.model_id == spec.id else None,
                )
            )
        return AvailableModels(
            models=entries, current_model=current, available_memory_bytes=free, loading=loading
        )

    @post("/unload", status_code=200, summary="Unload the default model, or a named one")
    async def unload(
        self,
        models: NamedDependency[ModelManager],
        model_id: str | None = Parameter(
            default=None,
            max_length=200,
            description="The resident model to unload; absent: the default model.",
        ),
    ) -> StatusResponse:
        """Free a model's memory; succeeds also when it was not loaded."""
        target = models.resolve(model_id) or model_id if model_id else None
        unloaded = await models.unload(target)
        message = f"Model '{unloaded}' unloaded." if unloaded else "No model was loaded."
        return StatusResponse(status="success", message=message, model_id=unloaded)
