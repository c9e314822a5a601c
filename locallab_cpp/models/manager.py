"""Which model is loaded: load, unload and switch, one at a time.

The manager lives on ``app.state`` and is what controllers receive by dependency
injection. Fetching (download, sha256 check) and loading run in a worker thread, so the
event loop keeps serving /health and the current model keeps generating while the next one
downloads; the old model is closed only once the new GGUF is on disk, verified and its
header checked (the factory's ``preflight``), and it is opened again if the new one still
fails to load. An engine whose decode thread died (``Engine.failed``) is replaced by a fresh
one at the next request or load.

Idle models unload after the default keep-alive (--keep-alive) or a request's own, except
pinned ones (--pin); the next request for an idle-unloaded model, named or not, loads it
again, whereas after an explicit unload a request naming no model finds none. A generation
request does not download a hub model that is not on disk (ModelNotDownloaded, 404) unless
--pull-on-demand is set; explicit loads do.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from pathlib import Path

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import Engine
from locallab_cpp.errors import (
    GenerationAborted,
    LoadConflict,
    LocalLabError,
    ModelNotDownloaded,
    ModelNotFound,
    ModelUnavailable,
    NoModelLoaded,
)
from locallab_cpp.models.fit import resident_bytes
from locallab_cpp.models.idle import IdleTimers
from locallab_cpp.models.progress import LoadCancelled, LoadProgress, ProgressSnapshot
from locallab_cpp.models.registry import ModelSpec, Registry

logger = logging.getLogger("locallab_cpp")

EngineFactory = Callable[[ModelSpec, Path, Settings], Engine]
"""Opens an engine (blocking). It may also have ``preflight(spec, path)``, which raises a
LocalLabError for a file it cannot load, and ``check_memory(spec, path, settings, freed)``,
which raises InsufficientMemory for a model that would not fit once the current one's
``freed`` bytes are given back (models/fit.py); both run before the current model is
closed."""

SWITCH_POLL_S = 0.05
KEEP_ALIVE_POLL_S = 0.25
"""How often the idle reaper looks at a model that has a keep-alive."""


LoadState = LoadProgress
"""A load under way (its ``model_id``, ``started_at`` and progress)."""


class ModelManager:
    """Owns the current engine and serializes every change to it."""

    def __init__(self, registry: Registry, settings: Settings, factory: EngineFactory) -> None:
        self.registry = registry
        self.settings = settings
        self._factory = factory
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()
        self._loading: LoadProgress | None = None
        self._last: ProgressSnapshot | None = None
        self._switching: asyncio.Event | None = None
        """Set while a switch waits for the old model's generations to end."""
        self._draining = False
        """The server is shutting down: no new generation or load is started."""
        pins = [self.untagged(name) or name for name in settings.pin]
        for name in pins:
            if name not in registry:
                logger.warning("--pin %s: no such model in the registry", name)
        self._idle = IdleTimers(settings.keep_alive_s, pins)
        """Each model's keep-alive (idle.py)."""
        self._idle_unloaded: str | None = None
        """The model last unloaded for idleness, loaded again by the next request that
        names none; None after an explicit unload or any load."""
        self._reaper: asyncio.Task[None] | None = None
        self.keep_alive_poll_s = KEEP_ALIVE_POLL_S

    @property
    def engine(self) -> Engine | None:
        """The loaded engine, if any."""
        return self._engine

    @property
    def loading(self) -> LoadProgress | None:
        """The load under way, if any."""
        return self._loading

    def progress(self) -> ProgressSnapshot | None:
        """The load under way, else how the last one ended, else None."""
        loading = self._loading
        return loading.snapshot() if loading is not None else self._last

    @property
    def idle_unloaded(self) -> str | None:
        """The model unloaded for idleness that the next request naming none loads again."""
        return self._idle_unloaded

    @property
    def current_id(self) -> str | None:
        """Id of the loaded model, or None."""
        return self._engine.info.model_id if self._engine is not None else None

    async def load(self, model_id: str) -> Engine:
        """Load ``model_id`` (explicit load): in-flight generations of the old model end.

        Loading the model that is already loaded returns at once (unless its engine
        failed: then it is opened again). Raises LoadConflict if another load is under way.
        """
        spec = self.registry.get(model_id)
        self._refuse_if_draining()
        if self._lock.locked():
            raise LoadConflict(
                f"Model '{self._loading.model_id if self._loading else '?'}' is being loaded; "
                "retry when it has finished."
            )
        current = self._engine
        if current is not None and current.info.model_id == spec.id and not current.failed:
            # Clients often load their model at start; a server that already has it must
            # not reload it under the other clients' generations.
            return current
        async with self._lock:
            return await self._replace(spec)

    async def unload(self) -> str | None:
        """Unload the current model; in-flight generations end with an error."""
        if self._lock.locked():
            raise LoadConflict()
        async with self._lock:
            old = self._engine
            self._engine, self._idle_unloaded = None, None
            if old is None:
                return None
            self._idle.forget(old.info.model_id)
            await asyncio.to_thread(
                old.close, GenerationAborted("The model was unloaded during the generation.")
            )
            return old.info.model_id

    def resolve(self, name: str | None) -> str | None:
        """The registry id a request's model name means: the id itself or ``id:tag``
        (:meth:`untagged`), else the model of the first --model-alias whose NAME (a glob)
        matches; None (the loaded model) for any other name. An alias whose MODEL the
        registry lacks is ModelNotFound."""
        if not name:
            return None
        if name in self.registry:
            return name
        tagged = self.untagged(name)
        if tagged is not None:
            return tagged
        for alias in self.settings.model_aliases:
            pattern, _, target = alias.partition("=")
            if fnmatch.fnmatchcase(name, pattern.strip()):
                target = target.strip()
                if target not in self.registry:
                    raise ModelNotFound(target)
                return target
        return None

    def untagged(self, name: str) -> str | None:
        """The registry id of an Ollama-style ``id:tag`` name: ``:latest`` or the entry's
        quantization (``gemma-3-270m:q4_k_m``) as the tag; None if ``name`` is not one."""
        model_id, colon, tag = name.rpartition(":")
        if not colon or model_id not in self.registry:
            return None
        spec = self.registry.get(model_id)
        if tag.lower() in ("latest", spec.quantization.lower()):
            return model_id
        return None

    async def engine_for(self, model_id: str | None) -> Engine:
        """The engine to generate with; switches model if a request names another one.

        A switch waits until the current model's in-flight sequences have finished;
        requests arriving meanwhile wait behind it (else steady traffic for the current
        model would keep it busy, and the switch waiting, for ever). A failed engine is
        opened again.
        """
        self._refuse_if_draining()
        while (switching := self._switching) is not None:
            await switching.wait()
        loading = self._loading
        if model_id is None and self._engine is None:
            # Unloaded for idleness: the next request loads it again, and the requests
            # arriving during that reload wait for it (behind the lock) like the first.
            idle = self._idle_unloaded
            if loading is None or (idle is not None and loading.model_id == idle):
                model_id = idle
        if model_id is None:
            # While a first model loads, wait for it; while it downloads or is checked
            # (minutes, perhaps), say so rather than hold the request.
            while self._engine is None and (loading := self._loading) is not None:
                now = loading.snapshot()
                if now.state != "loading":
                    done = f" ({now.percent:.0f}%)" if now.percent is not None else ""
                    raise NoModelLoaded(
                        f"No model is loaded yet: model '{now.model_id}' is {now.state}"
                        f"{done}. GET /models/load/progress follows it; retry when it is ready.",
                        retry_after=5,
                    )
                await asyncio.sleep(SWITCH_POLL_S)
            engine = self._engine
            if engine is None:
                raise NoModelLoaded()
            return await self._reopen(engine) if engine.failed else engine
        spec = self.registry.get(model_id)
        engine = self._engine
        if engine is not None and engine.info.model_id == spec.id:
            return await self._reopen(engine) if engine.failed else engine
        # Gigabytes downloaded inside one request, while every other client waits on the
        # switch: only explicit loads and pulls download (package models are assembled).
        pull = self.settings.pull_on_demand or spec.source != "hub"
        if not pull and await asyncio.to_thread(self.registry.local_path, spec) is None:
            raise ModelNotDownloaded(spec.id)
        async with self._lock:
            current = self._engine
            if current is not None and current.info.model_id == spec.id and not current.failed:
                return current
            switched = asyncio.Event()
            self._switching = switched
            try:
                while current is not None and not current.failed:
                    stats = current.stats()
                    if stats.active == 0 and stats.queued == 0:
                        break
                    await asyncio.sleep(SWITCH_POLL_S)
                return await self._replace(spec)
            finally:
                self._switching = None
                switched.set()

    async def _reopen(self, failed: Engine) -> Engine:
        """A fresh engine for the model of ``failed``, whose decode thread died."""
        async with self._lock:
            current = self._engine
            if current is not None and current is not failed and not current.failed:
                return current  # another request opened it meanwhile
            if current is None:
                raise NoModelLoaded()
            logger.warning("the engine of %s failed; opening it again", current.info.model_id)
            return await self._replace(self.registry.get(current.info.model_id))

    def _refuse_if_draining(self) -> None:
        if self._draining:
            raise GenerationAborted("The server is shutting down.")

    async def _replace(self, spec: ModelSpec) -> Engine:
        progress = LoadProgress(spec.id)
        self._loading = progress
        try:
            # Fetch first: the current model keeps serving while the next one downloads.
            path = await asyncio.to_thread(self.registry.ensure_local, spec, progress)
            preflight = getattr(self._factory, "preflight", None)
            if preflight is not None:  # a bad file must not cost the model being served
                await asyncio.to_thread(preflight, spec, path)
            check_memory = getattr(self._factory, "check_memory", None)
            if check_memory is not None:  # refused while the old model still serves
                old_engine = self._engine
                freed = resident_bytes(old_engine.info) if old_engine is not None else 0
                await asyncio.to_thread(check_memory, spec, path, self.settings, freed)
            progress.begin("loading")
            old, self._engine = self._engine, None
            if old is not None:
                if old.info.model_id != spec.id:
                    self._idle.forget(old.info.model_id)
                # Closed first: two models at once may not fit a laptop's memory.
                await asyncio.to_thread(
                    old.close,
                    GenerationAborted(
                        f"The model was switched to '{spec.id}' during the generation."
                    ),
                )
            try:
                engine = await asyncio.to_thread(self._open, spec, path)
            except LocalLabError:
                if old is not None and not old.failed and old.info.model_id != spec.id:
                    self._engine = await asyncio.to_thread(self._restore, old.info.model_id)
                raise
            self._engine, self._idle_unloaded = engine, None
            self._idle.loaded()
            self._start_reaper()
            self._last = progress.finish("ready")
            logger.info("model %s loaded", spec.id)
            return engine
        except LoadCancelled:
            self._last = progress.finish("failed", "The load was cancelled.")
            raise ModelUnavailable(
                f"The load of model '{spec.id}' was cancelled: the server is shutting down."
            ) from None
        except LocalLabError as exc:
            self._last = progress.finish("failed", exc.detail)
            raise
        except BaseException:
            self._last = progress.finish("failed", "The load failed; see the server log.")
            raise
        finally:
            self._loading = None

    def _restore(self, model_id: str) -> Engine | None:
        """Open ``model_id`` again after another model failed to load in its place."""
        try:
            spec = self.registry.get(model_id)
            engine = self._open(spec, self.registry.ensure_local(spec))
        except Exception:
            logger.exception("could not open %s again after a failed load", model_id)
            return None
        logger.info("model %s opened again after the failed load", model_id)
        return engine

    def _open(self, spec: ModelSpec, path: Path) -> Engine:
        try:
            return self._factory(spec, path, self.settings)
        except LocalLabError:
            raise
        except Exception as exc:
            logger.exception("loading %s failed", spec.id)
            raise ModelUnavailable(
                f"Model '{spec.id}' could not be loaded ({type(exc).__name__}); see the server log."
            ) from None

    async def drain(self, grace_s: float) -> None:
        """At shutdown: refuse new generations and loads, then wait up to ``grace_s``
        seconds for the running and queued ones to finish (close() ends the rest)."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            engine = self._engine
            if engine is None or engine.failed:
                return
            stats = engine.stats()
            if stats.active == 0 and stats.queued == 0:
                return
            await asyncio.sleep(SWITCH_POLL_S)

    async def close(self) -> None:
        """Free the engine at shutdown; a download under way stops at its next chunk."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._loading is not None:
            self._loading.cancel()
        old, self._engine = self._engine, None
        if old is not None:
            await asyncio.to_thread(old.close, GenerationAborted("The server is shutting down."))

    # ----- keep-alive: unloading a model that stays idle --------------------------------

    def keep_alive(self, model_id: str, seconds: float | None) -> None:
        """The model unloads once it has been idle for ``seconds`` (None: never; 0: as
        soon as it is idle). Set by a request that carries Ollama's ``keep_alive``; it
        lasts until another one changes it or the model is unloaded (a model loaded again
        starts with the server's --keep-alive). A pinned model stays loaded whatever it
        says. Call it on the event loop: it starts the idle reaper."""
        self._idle.set(model_id, seconds, current=model_id == self.current_id)
        self._start_reaper()

    def _start_reaper(self) -> None:
        """Start the idle reaper if some model may unload for idleness (event loop)."""
        if self._idle and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    def expires_at(self) -> float | None:
        """Unix time at which the current model unloads if it stays idle; None: never."""
        return self._idle.expires_at(self._engine)

    async def unload_model(self, model_id: str) -> bool:
        """Unload ``model_id`` if it is the current model, once its running and queued
        generations have finished (new requests wait meanwhile, as for a switch); True if
        it was unloaded. Ollama's ``keep_alive: 0`` with an empty prompt."""
        if self.current_id != model_id:
            return False
        async with self._lock:
            current = self._engine
            if current is None or current.info.model_id != model_id:
                return False
            self._idle_unloaded = None  # asked for: a request naming no model finds none
            done = asyncio.Event()
            self._switching = done
            try:
                while not current.failed:
                    stats = current.stats()
                    if stats.active == 0 and stats.queued == 0:
                        break
                    await asyncio.sleep(SWITCH_POLL_S)
                await self._close_current("The model was unloaded (keep_alive).")
            finally:
                self._switching = None
                done.set()
        return True

    async def _close_current(self, why: str) -> None:
        """Close the current engine (the lock is held)."""
        old, self._engine = self._engine, None
        if old is not None:
            self._idle.forget(old.info.model_id)
            await asyncio.to_thread(old.close, GenerationAborted(why))
            logger.info("model %s unloaded: %s", old.info.model_id, why)

    async def _reap_idle(self) -> None:
        """Unload the current model once it has been idle for its keep-alive; ends when no
        model has one (keep_alive() starts it again)."""
        while self._idle:
            await asyncio.sleep(self.keep_alive_poll_s)
            engine = self._engine
            if engine is None or self._lock.locked() or self._switching is not None:
                continue
            if not self._idle.due(engine):
                continue
            async with self._lock:
                # Looked at again under the lock: a request may have started meanwhile.
                if self._engine is engine and self._idle.due(engine):
                    seconds = self._idle.seconds(engine.info.model_id) or 0.0
                    await self._close_current(f"idle for {seconds:g} s (keep_alive)")
                    self._idle_unloaded = engine.info.model_id
