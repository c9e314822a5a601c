"""The resident models as the LocalLab API shows them (/models/current, /system/info)."""

from __future__ import annotations

import time

import msgspec

from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.placement import held_bytes


class ResidentModel(msgspec.Struct, kw_only=True):
    """One model held in memory, beside the others."""

    model_id: str
    kind: str
    """chat, embedding or rerank."""
    is_default: bool
    """The model a request naming none gets (the one loaded last through /models/load)."""
    memory_bytes: int
    """What the model holds by the memory estimate: file, KV cache and buffers."""
    n_ctx: int
    parallel: int
    active_sequences: int
    queued_sequences: int
    loaded_at: float
    expires_in_s: float | None
    """Seconds until it unloads if it stays idle (--keep-alive, Ollama's keep_alive);
    null: never (pinned, or keep-alive -1)."""


def resident_models(models: ModelManager) -> list[ResidentModel]:
    """Every resident model, the most recently used first."""
    now = time.time()
    shown = []
    for engine in reversed(models.residents()):
        info, stats = engine.info, engine.stats()
        expires = models.expires_at(info.model_id)
        kind = models.registry.get(info.model_id).kind if info.model_id in models.registry else ""
        shown.append(
            ResidentModel(
                model_id=info.model_id,
                kind=kind,
                is_default=info.model_id == models.current_id,
                memory_bytes=held_bytes(engine),
                n_ctx=info.n_ctx,
                parallel=info.parallel,
                active_sequences=stats.active,
                queued_sequences=stats.queued,
                loaded_at=info.loaded_at,
                expires_in_s=None if expires is None else round(max(0.0, expires - now), 1),
            )
        )
    return shown
