"""What /metrics and /health read from the resident engines when they are asked.

Only figures the engines already keep (``stats()``, ``info``), read without waiting on a
generation (LlamaEngine.stats takes no lock), so a scrape costs microseconds per model.
"""

from __future__ import annotations

from dataclasses import dataclass

from locallab_cpp.engine.base import Resident
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.metrics import ReadFamily


@dataclass(frozen=True, slots=True)
class ModelNow:
    """One resident model's figures at this moment."""

    model_id: str
    generates: bool
    """A chat (generating) model: the one kind whose slots /health reports."""
    parallel: int
    busy: int
    queued: int
    kv_used: int
    kv_size: int
    cache_bytes: int
    cache_entries: int
    hits_memory: int
    hits_disk: int

    @property
    def idle(self) -> int:
        """Slots without a sequence."""
        return self.parallel - self.busy


def _now(models: ModelManager, engine: Resident) -> ModelNow:
    info, stats = engine.info, engine.stats()
    spec_kind = models.registry.get(info.model_id).kind if info.model_id in models.registry else ""
    cache = stats.prompt_cache or {}
    # A failed engine serves nothing until it is opened again: it has no slots to offer.
    parallel = 0 if engine.failed else max(0, info.parallel)
    return ModelNow(
        model_id=info.model_id,
        generates=spec_kind in ("chat", ""),
        parallel=parallel,
        # An embedding engine counts the inputs of its batch, which may exceed its slots.
        busy=min(parallel, max(0, stats.active)),
        queued=stats.queued,
        kv_used=stats.kv_used_tokens,
        kv_size=int(info.details.get("kv_pool_tokens", 0)),
        cache_bytes=cache.get("bytes", 0),
        cache_entries=cache.get("entries", 0),
        hits_memory=cache.get("hits_memory", 0),
        hits_disk=cache.get("hits_disk", 0),
    )


def resident_figures(models: ModelManager) -> list[ModelNow]:
    """Every resident model's figures, in the manager's order."""
    return [_now(models, engine) for engine in models.residents()]


def generation_slots(figures: list[ModelNow]) -> tuple[int, int]:
    """(idle, processing) slots summed over the generating models: /health's slot fields,
    as llama-server names them."""
    chat = [f for f in figures if f.generates]
    return sum(f.idle for f in chat), sum(f.busy for f in chat)


PER_MODEL: tuple[tuple[str, str, str, bool], ...] = (
    ("locallab_queue_depth", "Sequences waiting for a slot.", "queued", False),
    ("locallab_slots_busy", "Generation slots decoding a sequence.", "busy", True),
    ("locallab_slots_idle", "Generation slots without a sequence.", "idle", True),
    (
        "locallab_kv_pool_used_tokens",
        "KV cache cells in use: running sequences and idle slots' cached prompts.",
        "kv_used",
        True,
    ),
    ("locallab_kv_pool_tokens", "KV cache cells shared by the slots.", "kv_size", True),
    (
        "locallab_prompt_cache_bytes",
        "Bytes of saved prompt states held in memory.",
        "cache_bytes",
        True,
    ),
    ("locallab_prompt_cache_entries", "Saved prompt states held in memory.", "cache_entries", True),
)
"""The per-model gauges: name, help, the ModelNow field shown, and whether only generating
models have it (an embedding model has a queue but no KV pool or prompt cache)."""


def read_families(models: ModelManager) -> list[ReadFamily]:
    """The families /metrics reads now: one series per resident model."""
    figures = resident_figures(models)
    families = [
        ReadFamily(
            name,
            help_text,
            ("model",),
            tuple(
                ((f.model_id,), float(getattr(f, field)))
                for f in figures
                if f.generates or not chat_only
            ),
        )
        for name, help_text, field, chat_only in PER_MODEL
    ]
    hits = tuple(
        ((f.model_id, tier), float(count))
        for f in figures
        if f.generates
        for tier, count in (("memory", f.hits_memory), ("disk", f.hits_disk))
    )
    families.append(
        ReadFamily(
            "locallab_prompt_cache_hits_total",
            "Prompts started from a saved state, by where it was found (since the model loaded).",
            ("model", "tier"),
            hits,
            kind="counter",
        )
    )
    families.append(
        ReadFamily("locallab_models_resident", "Models held in memory.", (), (((), len(figures)),))
    )
    return families
