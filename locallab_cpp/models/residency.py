"""The model manager's keep-alive half: idle models unload, and what each model serves.

:class:`KeepAliveMixin` is part of :class:`locallab_cpp.models.manager.ModelManager`: a
reaper task looks at every resident model each ``keep_alive_poll_s`` seconds and unloads
the ones idle for their keep-alive (idle.py); Ollama's ``keep_alive`` sets it per model.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.placement import is_busy
from locallab_cpp.models.registry import ModelKind, ModelSpec, Registry

if TYPE_CHECKING:
    from locallab_cpp.engine.base import Resident
    from locallab_cpp.models.idle import IdleTimers

KEEP_ALIVE_POLL_S = 0.25
"""How often the idle reaper looks at the resident models."""

_SERVES = {
    "chat": "text generation (chat, completions, /generate)",
    "embedding": "embeddings (POST /v1/embeddings, /api/embed)",
    "rerank": "rerank scores (POST /v1/rerank)",
}


def wrong_kind(registry: Registry, spec: ModelSpec | None, wanted: ModelKind) -> InvalidRequest:
    """The 400 for a request that names a model of another kind (or none of ``wanted``
    exists): what the model serves and which models serve what was asked."""
    others = [s.id for s in registry if s.kind == wanted]
    listed = ", ".join(others[:8]) if others else "none in the registry (add one to models.toml)"
    head = (
        f"Model '{spec.id}' is {'an' if spec.kind[0] in 'aeiou' else 'a'} {spec.kind} "
        f"model: it serves {_SERVES[spec.kind]}, not "
        if spec is not None
        else "No model serves "
    )
    return InvalidRequest(f"{head}{_SERVES[wanted]}. Models that do: {listed}.")


class KeepAliveMixin:
    """Keep-alive timers and the idle reaper of the model manager."""

    keep_alive_poll_s: float
    _reaper: asyncio.Task[None] | None
    _idle: IdleTimers
    _residents: dict[str, Resident]
    _lock: asyncio.Lock
    _default: str | None
    _idle_unloaded: str | None

    async def _retire(self, engine: Resident, why: str) -> None:
        """Close a resident model once idle (the manager's)."""
        raise NotImplementedError

    def _init_reaper(self) -> None:
        self._reaper = None
        self.keep_alive_poll_s = KEEP_ALIVE_POLL_S

    def _stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def keep_alive(self, model_id: str, seconds: float | None) -> None:
        """The model unloads once it has been idle for ``seconds`` (None: never; 0: as
        soon as it is idle). Set by a request that carries Ollama's ``keep_alive``; it
        lasts until another one changes it or the model is unloaded (a model loaded again
        starts with the server's --keep-alive). A pinned model stays loaded whatever it
        says. Call it on the event loop: it starts the idle reaper."""
        self._idle.set(model_id, seconds, current=model_id in self._residents)
        self._start_reaper()

    def _start_reaper(self) -> None:
        """Start the idle reaper if some model may unload for idleness (event loop)."""
        if self._idle and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    def expires_at(self, model_id: str | None = None) -> float | None:
        """Unix time at which ``model_id`` (default: the default model) unloads if it
        stays idle; None: never, or not resident."""
        target = model_id or self._default
        return self._idle.expires_at(self._residents.get(target) if target else None)

    async def unload_model(self, model_id: str) -> bool:
        """Unload ``model_id`` if it is resident, once its running and queued generations
        have finished (new requests for it wait meanwhile); True if it was unloaded.
        Ollama's ``keep_alive: 0`` with an empty prompt."""
        if model_id not in self._residents:
            return False
        async with self._lock:
            engine = self._residents.get(model_id)
            if engine is None:
                return False
            await self._retire(engine, "unloaded (keep_alive)")
            if self._idle_unloaded == model_id:
                self._idle_unloaded = None  # asked for: a request naming no model finds none
        return True

    async def _reap_idle(self) -> None:
        """Unload each resident model once it has been idle for its keep-alive; ends when
        no model has one (keep_alive() starts it again)."""
        while self._idle:
            await asyncio.sleep(self.keep_alive_poll_s)
            if self._lock.locked():
                continue
            for engine in list(self._residents.values()):
                if engine.failed or not self._idle.due(engine):
                    continue
                async with self._lock:
                    # Looked at again under the lock: a request may have started meanwhile.
                    model_id = engine.info.model_id
                    if self._residents.get(model_id) is not engine or not self._idle.due(engine):
                        continue
                    if is_busy(engine):
                        continue
                    seconds = self._idle.seconds(model_id) or 0.0
                    await self._retire(engine, f"unloaded: idle for {seconds:g} s (keep_alive)")
