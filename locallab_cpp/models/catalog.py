"""The model catalog: every registry entry with what a listing shows about it.

One place for what ``/models/available``, ``python -m locallab_cpp models list`` (and the
model lists of the other APIs) say about a model: where its file is, its size, the memory it
needs at the current settings and the context a request can really use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from locallab_cpp.config import Settings
from locallab_cpp.models import sizing
from locallab_cpp.models.embed_sizing import embed_plan, file_architecture
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.registry import ModelSpec, Registry


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One model as listings describe it."""

    spec: ModelSpec
    path: Path | None
    """Its GGUF on this machine, None if not downloaded (or not yet assembled)."""
    size_on_disk_bytes: int
    """The local file's size; 0 when there is none."""
    estimated_memory_bytes: int
    """Memory it needs once loaded at the current settings (sizing.plan's need_bytes)."""
    context_length: int
    """Tokens one request can use: the slot context the engine will configure."""
    available_memory_bytes: int = 0
    """The memory the plan counted on (sizing.available_memory: free memory, capped)."""

    @property
    def fits(self) -> bool:
        """Whether it can load now at the current settings (what ``can_load`` reports)."""
        return self.estimated_memory_bytes <= self.available_memory_bytes

    @property
    def size_bytes(self) -> int:
        """The file's size: on disk when known, else the registry's figure."""
        return self.size_on_disk_bytes or self.spec.size_bytes

    @property
    def on_disk(self) -> bool:
        """Whether its GGUF is on this machine now."""
        return self.path is not None

    @property
    def is_downloaded(self) -> bool:
        """Whether loading needs no download (packaged models assemble offline)."""
        return self.path is not None or self.spec.source == "package"


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def describe(
    registry: Registry, spec: ModelSpec, settings: Settings, available: int | None = None
) -> CatalogEntry:
    """One entry, planned (sizing.plan, as the engine will) with ``available`` bytes (None:
    sizing.available_memory now); touches the disk (hub cache look-ups), so call it off the
    event loop."""
    path = registry.local_path(spec)
    on_disk = _file_size(path)
    # The file's header gives the shape where it is on disk (cached per file).
    shaped = with_file_shape(spec, path)
    if spec.kind != "chat":  # one context of its own, no slots (embed_sizing.py)
        free = sizing.available_memory(settings) if available is None else available
        memory = embed_plan(shaped, settings, free, on_disk, architecture=file_architecture(path))
    else:
        memory = sizing.plan(shaped, settings, available, on_disk)
    return CatalogEntry(
        spec=spec,
        path=path,
        size_on_disk_bytes=on_disk,
        estimated_memory_bytes=memory.need_bytes,
        context_length=memory.n_ctx_slot,
        available_memory_bytes=memory.available_bytes,
    )


def catalog(registry: Registry, settings: Settings) -> list[CatalogEntry]:
    """Every registry entry in registry order, all planned with the same available memory
    (blocking: disk look-ups)."""
    available = sizing.available_memory(settings)
    return [describe(registry, spec, settings, available) for spec in registry]
