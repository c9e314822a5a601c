"""What Ollama's listings say about a registry model on disk: its file's size, mtime and
sha256, and ``details`` from its GGUF header (tags.py serves /api/tags and /api/ps; show.py
builds on the same view).

Everything here touches the disk, and a sha256 the registry does not know is computed (once
per file version, then remembered in checksum.py's records): call :func:`view` in a worker
thread, never on the event loop.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from locallab_cpp.api.ollama.model_protocol import ModelDetails
from locallab_cpp.api.ollama.names import not_found
from locallab_cpp.engine.llama.gguf import GGUFError
from locallab_cpp.models import checksum
from locallab_cpp.models.gguf_info import GGUFInfo, gguf_info, human_number
from locallab_cpp.models.registry import ModelSpec, Registry

logger = logging.getLogger("locallab_cpp.api.ollama")

_HEX64 = re.compile(r"[0-9a-f]{64}")
NEVER_S = (2**63 - 1) / 1e9
"""Ollama's "never" (keep_alive -1): its expiry is now plus the longest Go duration, about
292 years; clients that show it just see a date far away."""


@dataclass(frozen=True, slots=True)
class ModelView:
    """One registry model with its file on disk."""

    spec: ModelSpec
    path: Path
    size: int
    modified: float
    """The file's mtime (unix time)."""
    digest: str
    """The file's sha256, hex."""
    info: GGUFInfo | None
    """Its GGUF header; None when the header cannot be read (``error`` says why)."""
    error: str = ""


def rfc3339(unix: float) -> str:
    """``unix`` as RFC 3339 in UTC with microseconds, as Go's clients parse it."""
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def expiry(unix: float | None, now: float) -> str:
    """``expires_at`` of /api/ps: the time, or for a model that never unloads a date ~292
    years away, as Ollama writes for keep_alive -1."""
    if unix is None:
        unix = now + NEVER_S
    return rfc3339(min(unix, 253402300799.0))  # datetime stops at the year 9999


def file_sha256(spec: ModelSpec, path: Path) -> str:
    """The sha256 of the model's file: the registry's where it has one (a file that does
    not match it is never loaded), a hub blob's name (huggingface_hub names LFS blobs by
    their sha256), an earlier hash of this very file, else computed now and recorded."""
    if spec.sha256:
        return spec.sha256.lower()
    resolved = path.resolve()
    if spec.source == "hub" and _HEX64.fullmatch(resolved.name):
        return resolved.name
    known = checksum.recorded(resolved)
    if known:
        return known
    digest = checksum.sha256_file(resolved)
    checksum.remember(resolved, digest)
    return digest


def view(registry: Registry, spec: ModelSpec) -> ModelView | None:
    """The model as the listings show it, or None when its file is not on disk. Blocking."""
    path = registry.local_path(spec)
    if path is None:
        return None
    try:
        st = path.stat()
        digest = file_sha256(spec, path)
    except OSError as exc:
        logger.warning("cannot read the GGUF of %s: %s", spec.id, exc)
        return None
    info: GGUFInfo | None = None
    error = ""
    try:
        info = gguf_info(path)
    except (GGUFError, OSError) as exc:
        error = str(exc)
        logger.warning("the GGUF header of %s cannot be read: %s", spec.id, error)
    return ModelView(spec, path, st.st_size, st.st_mtime, digest, info, error)


def view_or_404(registry: Registry, model_id: str, name: str) -> ModelView:
    """:func:`view` of ``model_id``; Ollama's 404 (named ``name``) when it is not on disk."""
    found = view(registry, registry.get(model_id))
    if found is None:
        raise not_found(name)
    return found


def details(view: ModelView) -> ModelDetails:
    """``details``: family and size from the GGUF header, else from the registry entry."""
    info, spec = view.info, view.spec
    family = info.architecture if info is not None else ""
    size = human_number(info.parameter_count) if info and info.parameter_count else ""
    return ModelDetails(
        family=family,
        families=[family] if family else [],
        parameter_size=size or spec.parameters,
        quantization_level=(info.quantization if info is not None else "") or spec.quantization,
    )


def listing(registry: Registry) -> list[ModelView]:
    """Every registry model on disk, in registry order. Blocking."""
    return [v for spec in registry if (v := view(registry, spec)) is not None]
