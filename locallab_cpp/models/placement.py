"""Where a model goes: the memory budget of resident models, and which to unload for room.

Several models stay resident together (a chat model, an autocomplete model, an embedding
model...) under one budget: ``--memory-limit`` when it is set, else what the machine has
free. The budget a new model may plan with (its "room") is computed here and handed to the
engine factory as that load's ``memory_limit``, so the fit check (fit.py) and the engine's
automatic choices (context, slots, KV pool) see the same figure.

Two facts about the machine's free memory shape the formula. llama.cpp maps a GGUF's
weights from the file, and mapped file pages count as reclaimable, so they appear in the
machine's available memory while the model is resident: the files of the models that stay
are taken off it, else a second model would be planned into the first one's weights. And
unloading a model gives back what it holds beyond its file (KV cache, buffers), which is
added for the models chosen to make room.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import Resident
from locallab_cpp.models.fit import gpu_layers_of, resident_bytes


@dataclass(frozen=True, slots=True)
class Room:
    """The memory a new model may take once ``evicted`` models are unloaded."""

    bytes: int
    """What the new model may plan with (at least 1: a limit of 0 means "no limit")."""
    freed: int
    """What unloading ``evicted`` gives back beyond their mapped files."""
    evicted: tuple[str, ...] = ()
    gpu_bytes: int = 0
    """What the new model's offloaded layers may take on the GPUs (0: no GPU counted)."""

    def limits(self, settings: Settings) -> Settings:
        """``settings`` with this room as the load's memory and GPU budgets."""
        return msgspec.structs.replace(
            settings, memory_limit=self.bytes, gpu_memory_limit=self.gpu_bytes
        )


def held_bytes(engine: Resident) -> int:
    """What a resident model holds by the estimate's terms (fit.resident_bytes)."""
    return resident_bytes(engine.info)


def gpu_bytes(engine: Resident) -> int:
    """What a resident model's offloaded layers hold on the GPU, by the same estimate."""
    return int(held_bytes(engine) * gpu_layers_of(engine.info))


def room(
    settings: Settings,
    machine_free: int,
    kept: Iterable[Resident],
    evicted: Iterable[Resident] = (),
    gpu_free: int | None = None,
) -> Room:
    """The room for a new model beside the ``kept`` resident models, once ``evicted`` are
    unloaded, on a machine with ``machine_free`` bytes available now (and ``gpu_free`` on
    its GPUs; None: no GPU). GPU allocations are real ones, so the resident models' are
    already off ``gpu_free``; the evicted models' come back."""
    kept, evicted = list(kept), list(evicted)
    freed = sum(max(0, held_bytes(e) - e.info.size_bytes) for e in evicted)
    free = machine_free - sum(e.info.size_bytes for e in kept) + freed
    if settings.memory_limit:
        free = min(free, settings.memory_limit - sum(held_bytes(e) for e in kept))
    gpu = 0
    if gpu_free is not None:
        gpu = gpu_free + sum(gpu_bytes(e) for e in evicted)
        if settings.gpu_memory_limit:
            gpu = min(gpu, settings.gpu_memory_limit - sum(gpu_bytes(e) for e in kept))
        gpu = max(1, gpu)
    return Room(max(1, free), freed, tuple(e.info.model_id for e in evicted), gpu)


def is_busy(engine: Resident) -> bool:
    """Whether ``engine`` has sequences running or waiting."""
    stats = engine.stats()
    return bool(stats.active or stats.queued)


def eviction_order(
    residents: Sequence[Resident], protected: Iterable[str], recent: Iterable[str] = ()
) -> tuple[list[Resident], list[Resident]]:
    """The residents that may make room, least recently used first (``residents`` come
    in that order): the idle ones, then the busy ones and those a request just asked for
    (which only a switch that waits for them may close). ``protected`` models (pinned, the
    one being loaded) are never chosen."""
    keep, asked = set(protected), set(recent)
    open_ = [e for e in residents if e.info.model_id not in keep]
    idle = [e for e in open_ if not is_busy(e) and e.info.model_id not in asked]
    return idle, [e for e in open_ if e not in idle]
