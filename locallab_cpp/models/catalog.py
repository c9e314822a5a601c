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
    """Memory it needs once loaded at the current settings (sizing.estimated_need)."""
    context_length: int
    """Tokens one request can use: the slot context the engine will configure."""

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


def describe(registry: Registry, spec: ModelSpec, settings: Settings) -> CatalogEntry:
    """One entry; touches the disk (hub cache look-ups), so call it off the event loop."""
    path = registry.local_path(spec)
    on_disk = _file_size(path)
    return CatalogEntry(
        spec=spec,
        path=path,
        size_on_disk_bytes=on_disk,
        estimated_memory_bytes=sizing.estimated_need(spec, settings, on_disk),
        context_length=sizing.slot_context(spec, settings),
    )


def catalog(registry: Registry, settings: Settings) -> list[CatalogEntry]:
    """Every registry entry in registry order (blocking: disk look-ups)."""
    return [describe(registry, spec, settings) for spec in registry]
