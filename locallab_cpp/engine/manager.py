"""Which model is loaded: load, unload and switch, one at a time.

The manager lives on ``app.state`` and is what controllers receive by dependency
injection. Loading runs in a worker thread, so the event loop keeps serving /health.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from locallab_cpp.engine.base import Engine
from locallab_cpp.errors import (
    GenerationAborted,
    LoadConflict,
    LocalLabError,
    ModelUnavailable,
    NoModelLoaded,
)
from locallab_cpp.registry import ModelSpec, Registry
from locallab_cpp.settings import Settings

logger = logging.getLogger("locallab_cpp")

EngineFactory = Callable[[ModelSpec, Path, Settings], Engine]

SWITCH_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class LoadState:
    """A load under way, for progress reports."""

    model_id: str
    started_at: float


class ModelManager:
    """Owns the current engine and serializes every change to it."""

    def __init__(self, registry: Registry, settings: Settings, factory: EngineFactory) -> None:
        self.registry = registry
        self.settings = settings
        self._factory = factory
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()
        self._loading: LoadState | None = None

    @property
    def engine(self) -> Engine | None:
        """The loaded engine, if any."""
        return self._engine

    @property
    def loading(self) -> LoadState | None:
        """The load under way, if any."""
        return self._loading

    @property
    def current_id(self) -> str | None:
        """Id of the loaded model, or None."""
        return self._engine.info.model_id if self._engine is not None else None

    async def load(self, model_id: str) -> Engine:
        """Load ``model_id`` (explicit load): in-flight generations of the old model end.

        Raises LoadConflict if another load is under way.
        """
        spec = self.registry.get(model_id)
        if self._lock.locked():
            raise LoadConflict(
                f"Model '{self._loading.model_id if self._loading else '?'}' is being loaded; "
                "retry when it has finished."
            )
        async with self._lock:
            return await self._replace(spec)

    async def unload(self) -> str | None:
        """Unload the current model; in-flight generations end with an error."""
        if self._lock.locked():
            raise LoadConflict()
        async with self._lock:
            old = self._engine
            self._engine = None
            if old is None:
                return None
            await asyncio.to_thread(
                old.close, GenerationAborted("The model was unloaded during the generation.")
            )
            return old.info.model_id

    async def engine_for(self, model_id: str | None) -> Engine:
        """The engine to generate with; switches model if a request names another one.

        A switch waits until the current model's in-flight sequences have finished.
        """
        if model_id is None:
            if self._engine is None:
                if self._loading is not None:
                    async with self._lock:
                        pass
                    if self._engine is not None:
                        return self._engine
                raise NoModelLoaded()
            return self._engine
        spec = self.registry.get(model_id)
        if self._engine is not None and self._engine.info.model_id == spec.id:
            return self._engine
        async with self._lock:
            current = self._engine
            if current is not None and current.info.model_id == spec.id:
                return current
            while current is not None:
                stats = current.stats()
                if stats.active == 0 and stats.queued == 0:
                    break
                await asyncio.sleep(SWITCH_POLL_S)
            return await self._replace(spec)

    async def _replace(self, spec: ModelSpec) -> Engine:
        self._loading = LoadState(model_id=spec.id, started_at=time.time())
        try:
            old, self._engine = self._engine, None
            if old is not None:
                await asyncio.to_thread(
                    old.close,
                    GenerationAborted(
                        f"The model was switched to '{spec.id}' during the generation."
                    ),
                )
            engine = await asyncio.to_thread(self._open, spec)
            self._engine = engine
            logger.info("model %s loaded", spec.id)
            return engine
        finally:
            self._loading = None

    def _open(self, spec: ModelSpec) -> Engine:
        path = self.registry.ensure_local(spec)
        try:
            return self._factory(spec, path, self.settings)
        except LocalLabError:
            raise
        except Exception as exc:
            logger.exception("loading %s failed", spec.id)
            raise ModelUnavailable(
                f"Model '{spec.id}' could not be loaded ({type(exc).__name__}); see the server log."
            ) from None

    async def close(self) -> None:
        """Free the engine at shutdown."""
        old, self._engine = self._engine, None
        if old is not None:
            await asyncio.to_thread(old.close, GenerationAborted("The server is shutting down."))
