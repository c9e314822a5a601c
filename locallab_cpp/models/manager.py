"""Which models are resident: several at once under one memory budget.

The manager lives on ``app.state`` and is what controllers receive by dependency
injection. It holds a chat model, an autocomplete model, an embedding model... side by
side, each engine with its own slots and KV pool (placement.py has the budget). A request
for a resident model gets its engine at once: it never waits on another model's load,
download or unload, which take the manager's lock. A request for a model that is not
resident loads it beside the others when it fits, else first unloads the least recently
used idle models (never pinned ones, nor one a request just asked for); a load that would
fit only by closing busy models waits for their generations to end (new requests for them
wait meanwhile, else steady traffic would keep them busy for ever), and one that fits in
no way is refused before anything is closed (InsufficientMemory, with what would fit).

Fetching (download, sha256 check) and loading run in worker threads. A model whose file
is not on disk is not downloaded by a generation request (ModelNotDownloaded, 404) unless
--pull-on-demand is set; explicit loads do. An engine whose decode thread died
(``failed``) is opened again at the next request for it.

A request that names no model gets the default model: the one loaded last through
:meth:`load` (POST /models/load, or the start-up model). Idle models unload after the
default keep-alive (--keep-alive) or a request's own, except pinned ones (--pin); when the
default model was unloaded for idleness or room, the next request naming none loads it
again, whereas after an explicit unload such a request finds none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EmbeddingEngine, Engine, Resident
from locallab_cpp.errors import (
    GenerationAborted,
    InsufficientMemory,
    LoadConflict,
    LocalLabError,
    ModelNotDownloaded,
    ModelUnavailable,
    NoModelLoaded,
)
from locallab_cpp.models import naming
from locallab_cpp.models.idle import IdleTimers
from locallab_cpp.models.placement import Room, eviction_order, is_busy, room
from locallab_cpp.models.progress import LoadCancelled, LoadProgress, ProgressSnapshot
from locallab_cpp.models.registry import ModelKind, ModelSpec, Registry
from locallab_cpp.models.residency import KeepAliveMixin, wrong_kind
from locallab_cpp.serving import telemetry

logger = logging.getLogger("locallab_cpp")

EngineFactory = Callable[[ModelSpec, Path, Settings], Resident]
"""Opens an engine (blocking) with the settings of that load (``memory_limit`` is the room
the budget leaves it). It may also have ``preflight(spec, path)``, which raises a
LocalLabError for a file it cannot load, and ``check_memory(spec, path, settings,
freed)``, which raises InsufficientMemory for a model that does not fit the room, once
``freed`` bytes are given back (models/fit.py); both run before anything is closed."""

SWITCH_POLL_S = 0.05

LoadState = LoadProgress
"""A load under way (its ``model_id``, ``started_at`` and progress)."""


class ModelManager(KeepAliveMixin):
    """Owns the resident engines and serializes every change to them."""

    def __init__(self, registry: Registry, settings: Settings, factory: EngineFactory) -> None:
        self.registry = registry
        self.settings = settings
        self._factory = factory
        self._residents: dict[str, Resident] = {}
        """Resident engines by model id, least recently used first."""
        self._default: str | None = None
        """The model a request naming none gets (loaded last through load())."""
        self._lock = asyncio.Lock()
        """Held by every load and unload: one change at a time."""
        self._loading: LoadProgress | None = None
        self._last: ProgressSnapshot | None = None
        self._joins: dict[str, asyncio.Task[Resident]] = {}
        """Loads that requests started, by model id: later requests join them."""
        self._gates: dict[str, asyncio.Event] = {}
        """Models being closed once their generations end: their requests wait."""
        self._draining = False
        """The server is shutting down: no new generation or load is started."""
        pins = [naming.untagged(registry, name) or name for name in settings.pin]
        for name in pins:
            if name not in registry:
                logger.warning("--pin %s: no such model in the registry", name)
        self._idle = IdleTimers(settings.keep_alive_s, pins)
        self._idle_unloaded: str | None = None
        """The default model, unloaded for idleness or room, that the next request naming
        none loads again; None after an explicit unload or a load."""
        self._init_reaper()

    # ----- what is resident ---------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        """The default model's engine when it is resident and generates text."""
        engine = self._residents.get(self._default) if self._default else None
        if engine is None or self._kind(engine) != "chat":
            return None
        return cast(Engine, engine)

    @property
    def current_id(self) -> str | None:
        """Id of the default model when it is resident, else None."""
        return self._default if self._default in self._residents else None

    def residents(self) -> list[Resident]:
        """The resident engines, least recently used first."""
        return list(self._residents.values())

    def resident(self, model_id: str) -> Resident | None:
        """The engine of ``model_id`` if that model is resident."""
        return self._residents.get(model_id)

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
        """The default model, unloaded for idleness, that the next request naming none
        loads again."""
        return self._idle_unloaded

    def resolve(self, name: str | None) -> str | None:
        """The registry id a request's model name means (naming.resolve)."""
        return naming.resolve(self.registry, self.settings.model_aliases, name)

    def untagged(self, name: str) -> str | None:
        """The registry id of an Ollama-style ``id:tag`` name (naming.untagged)."""
        return naming.untagged(self.registry, name)

    def _kind(self, engine: Resident) -> ModelKind:
        model_id = engine.info.model_id
        return self.registry.get(model_id).kind if model_id in self.registry else "chat"

    # ----- explicit loads and unloads (the one-model view) ---------------------------------

    async def load(self, model_id: str) -> Resident:
        """Load ``model_id`` beside the resident models (downloading it if needed) and
        make it the default model. Loading a resident model returns it at once (a failed
        engine is opened again). Raises LoadConflict while another load is under way."""
        spec = self.registry.get(model_id)
        self._refuse_if_draining()
        if self._lock.locked():
            raise LoadConflict(
                f"Model '{self._loading.model_id if self._loading else '?'}' is being loaded; "
                "retry when it has finished."
            )
        current = self._residents.get(spec.id)
        if current is None or current.failed:
            async with self._lock:
                current = await self._place(spec)
        self._default, self._idle_unloaded = spec.id, None
        self._used(spec.id)
        return current

    async def unload(self, model_id: str | None = None) -> str | None:
        """Unload ``model_id`` (default: the default model) now; its in-flight
        generations end with an error. Returns the id unloaded, None if none was."""
        if self._lock.locked():
            raise LoadConflict()
        async with self._lock:
            target = model_id or self._default
            if model_id is None or model_id == self._default:
                self._default, self._idle_unloaded = None, None
            engine = self._residents.pop(target, None) if target else None
            if engine is None:
                return None
            self._idle.forget(engine.info.model_id)
            await asyncio.to_thread(
                engine.close, GenerationAborted("The model was unloaded during the generation.")
            )
            return engine.info.model_id

    # ----- engines for requests ---------------------------------------------------------

    async def engine_for(self, model_id: str | None) -> Engine:
        """The engine of a generating model (None: the default model), loaded if needed.
        A model of another kind is an InvalidRequest naming what it serves."""
        return cast(Engine, await self._engine_of(model_id, "chat"))

    async def embedder_for(
        self, model_id: str | None, kind: ModelKind = "embedding"
    ) -> EmbeddingEngine:
        """The engine of an embedding (or rerank) model, loaded if needed; None: the most
        recently used resident model of that kind, else the registry's first."""
        if model_id is None:
            of_kind = [e for e in self._residents.values() if self._kind(e) == kind]
            if of_kind:
                model_id = of_kind[-1].info.model_id
            else:
                model_id = next((s.id for s in self.registry if s.kind == kind), None)
                if model_id is None:
                    raise wrong_kind(self.registry, None, kind)
        return cast(EmbeddingEngine, await self._engine_of(model_id, kind))

    async def _engine_of(self, model_id: str | None, kind: ModelKind) -> Resident:
        self._refuse_if_draining()
        if model_id is None:
            model_id = await self._default_id()
        spec = self.registry.get(model_id)
        if spec.kind != kind:
            raise wrong_kind(self.registry, spec, kind)
        while (gate := self._gates.get(spec.id)) is not None:
            await gate.wait()
        engine = self._residents.get(spec.id)
        if engine is not None:
            self._used(spec.id)
            return await self._reopen(engine) if engine.failed else engine
        # Gigabytes downloaded inside one request: only explicit loads and pulls download
        # (package models are assembled).
        pull = self.settings.pull_on_demand or spec.source != "hub"
        if not pull and await asyncio.to_thread(self.registry.local_path, spec) is None:
            raise ModelNotDownloaded(spec.id)
        return await self._join_load(spec)

    async def _default_id(self) -> str:
        """The model a request naming none means: the default model; the default model
        unloaded for idleness or room; or, while a first model loads, that one."""
        while True:
            default = self._default or self._idle_unloaded
            if default is not None:
                return default
            loading = self._loading
            if loading is None:
                raise NoModelLoaded()
            now = loading.snapshot()
            if now.state != "loading":  # downloading or checking: minutes, perhaps
                done = f" ({now.percent:.0f}%)" if now.percent is not None else ""
                raise NoModelLoaded(
                    f"No model is loaded yet: model '{now.model_id}' is {now.state}"
                    f"{done}. GET /models/load/progress follows it; retry when it is ready.",
                    retry_after=5,
                )
            await asyncio.sleep(SWITCH_POLL_S)

    def _used(self, model_id: str) -> None:
        engine = self._residents.pop(model_id, None)
        if engine is not None:
            self._residents[model_id] = engine  # the most recently used goes last
        self._idle.touch(model_id)

    async def _join_load(self, spec: ModelSpec) -> Resident:
        """Load ``spec`` for a request; requests for the same model join the same load."""
        task = self._joins.get(spec.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_for_request(spec))
            self._joins[spec.id] = task
            task.add_done_callback(self._joined)
        return await asyncio.shield(task)

    def _joined(self, task: asyncio.Task[Resident]) -> None:
        for model_id, joined in list(self._joins.items()):
            if joined is task:
                del self._joins[model_id]
        if not task.cancelled():
            task.exception()  # retrieved: the requests that waited have it

    async def _load_for_request(self, spec: ModelSpec) -> Resident:
        async with self._lock:
            engine = self._residents.get(spec.id)
            if engine is None or engine.failed:
                engine = await self._place(spec)
            if self._idle_unloaded == spec.id or (
                self._default is None and self._idle_unloaded is None and spec.kind == "chat"
            ):
                # The default model coming back, or the first chat model since none was.
                self._default, self._idle_unloaded = spec.id, None
            self._used(spec.id)
            return engine

    async def _reopen(self, failed: Resident) -> Resident:
        """A fresh engine for the model of ``failed``, whose decode thread died."""
        model_id = failed.info.model_id
        async with self._lock:
            current = self._residents.get(model_id)
            if current is not None and current is not failed and not current.failed:
                return current  # another request opened it meanwhile
            logger.warning("the engine of %s failed; opening it again", model_id)
            return await self._place(self.registry.get(model_id))

    def _refuse_if_draining(self) -> None:
        if self._draining:
            raise GenerationAborted("The server is shutting down.")

    # ----- placing a model (the lock is held) -----------------------------------------------

    async def _place(self, spec: ModelSpec) -> Resident:
        progress = LoadProgress(spec.id)
        self._loading = progress
        started, placed_ok = time.monotonic(), False
        try:
            path = await asyncio.to_thread(self.registry.ensure_local, spec, progress)
            preflight = getattr(self._factory, "preflight", None)
            if preflight is not None:  # a bad file must not cost the models being served
                await asyncio.to_thread(preflight, spec, path)
            stale = self._residents.pop(spec.id, None)  # a failed engine of this model
            if stale is not None:
                await asyncio.to_thread(stale.close, GenerationAborted("The engine failed."))
            placed = await self._make_room(spec, path)
            progress.begin("loading")
            engine = await asyncio.to_thread(self._open, spec, path, placed.limits(self.settings))
            self._residents[spec.id] = engine
            self._idle.loaded(spec.id)
            self._start_reaper()
            self._last, placed_ok = progress.finish("ready"), True
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
            telemetry.record_load(spec.id, placed_ok, time.monotonic() - started)

    async def _make_room(self, spec: ModelSpec, path: Path) -> Room:
        """Find the least recently used models whose unloading lets ``spec`` fit the
        budget and --max-models, then unload them; refuse before closing anything when
        no choice fits."""
        from locallab_cpp.sysinfo import available_memory, gpu_free_memory

        check = getattr(self._factory, "check_memory", None)
        residents = list(self._residents.values())
        protected = {spec.id} | {m for m in self._residents if self._idle.pinned(m)}
        recent = {m for m in self._residents if self._idle.recent(m)}
        idle, busy = eviction_order(residents, protected, recent)
        candidates = idle + busy
        cap = self.settings.max_models
        free = await asyncio.to_thread(available_memory)
        gpu_free = await asyncio.to_thread(gpu_free_memory)
        chosen: list[Resident] = []
        refused: LocalLabError | None = None
        while True:
            kept = [e for e in residents if e not in chosen]
            placed = room(self.settings, free, kept, chosen, gpu_free)
            if not cap or len(kept) < cap:
                if check is None:
                    break
                try:
                    await asyncio.to_thread(
                        check, spec, path, placed.limits(self.settings), placed.freed
                    )
                    break
                except InsufficientMemory as exc:
                    refused = exc
            if len(chosen) == len(candidates):
                if refused is not None:
                    raise refused
                raise ModelUnavailable(
                    f"Model '{spec.id}' cannot be loaded: {cap} models are resident "
                    "(--max-models) and each is pinned or in use. Retry later, unload one "
                    "(POST /models/unload) or raise --max-models."
                )
            chosen.append(candidates[len(chosen)])
        for engine in chosen:
            await self._retire(engine, f"unloaded to make room for '{spec.id}'")
        return placed

    async def _retire(self, engine: Resident, why: str) -> None:
        """Close a resident model once its generations have ended (the lock is held);
        requests for it wait meanwhile, then load it again."""
        model_id = engine.info.model_id
        gate = asyncio.Event()
        self._gates[model_id] = gate
        try:
            # A request that just got the engine may not have submitted yet: the grace.
            while not engine.failed and (is_busy(engine) or self._idle.recent(model_id)):
                await asyncio.sleep(SWITCH_POLL_S)
            self._residents.pop(model_id, None)
            self._idle.forget(model_id)
            if model_id == self._default:
                self._default, self._idle_unloaded = None, model_id
            await asyncio.to_thread(
                engine.close, GenerationAborted(f"The model was {why} during the generation.")
            )
            logger.info("model %s %s", model_id, why)
        finally:
            del self._gates[model_id]
            gate.set()

    def _open(self, spec: ModelSpec, path: Path, settings: Settings) -> Resident:
        try:
            return self._factory(spec, path, settings)
        except LocalLabError:
            raise
        except Exception as exc:
            logger.exception("loading %s failed", spec.id)
            raise ModelUnavailable(
                f"Model '{spec.id}' could not be loaded ({type(exc).__name__}); see the server log."
            ) from None

    # ----- shutdown ------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """At shutdown: refuse new generations and loads, then wait up to ``grace_s``
        seconds for the running and queued ones to finish (close() ends the rest)."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            if not any(is_busy(e) for e in self._residents.values() if not e.failed):
                return
            await asyncio.sleep(SWITCH_POLL_S)

    async def close(self) -> None:
        """Free every engine at shutdown; a download under way stops at its next chunk."""
        self._stop_reaper()
        if self._loading is not None:
            self._loading.cancel()
        residents, self._residents = list(self._residents.values()), {}
        for engine in residents:
            await asyncio.to_thread(engine.close, GenerationAborted("The server is shutting down."))
