"""The embedding engine's choices that need no model: its pooling (registry, GGUF, kind)
and its memory plan (one context of its own size, no slots)."""

from __future__ import annotations

import msgspec

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama.embedding import choose_pooling, gguf_pooling
from locallab_cpp.models import sizing
from locallab_cpp.models.embed_sizing import DEFAULT_EMBED_CONTEXT, embed_context, embed_plan
from locallab_cpp.models.registry import ModelSpec, Registry

MIB = 1024 * 1024


def spec(**fields: object) -> ModelSpec:
    return msgspec.convert({"id": "m", "path": "m.gguf", **fields}, ModelSpec)


def test_pooling_from_the_registry_then_the_gguf_then_the_kind() -> None:
    bert = {"general.architecture": "bert", "bert.pooling_type": "2"}
    assert gguf_pooling(bert) == "cls"
    assert gguf_pooling({"general.architecture": "gemma3"}) is None
    assert choose_pooling(spec(kind="embedding", pooling="last"), bert) == "last"
    assert choose_pooling(spec(kind="embedding"), bert) == "cls"
    # A chat model's GGUF declares none (0) or nothing: it pools by mean.
    chat_gguf = {"general.architecture": "gemma3", "gemma3.pooling_type": "0"}
    assert choose_pooling(spec(kind="embedding"), chat_gguf) == "mean"
    assert choose_pooling(spec(kind="rerank"), {}) == "rank"
    assert (
        choose_pooling(spec(kind="embedding"), {"general.architecture": "x", "x.pooling_type": "z"})
        == "mean"
    )


def test_the_embedding_context_is_the_trained_one_capped() -> None:
    assert embed_context(512, Settings()) == 512
    assert embed_context(32768, Settings()) == DEFAULT_EMBED_CONTEXT
    assert embed_context(32768, Settings(n_ctx=4096)) == 4096
    assert embed_context(0, Settings()) == DEFAULT_EMBED_CONTEXT


def test_an_embedding_model_plans_no_slots_and_no_pool() -> None:
    registry = Registry.load(None)
    for model_id in ("nomic-embed-text-v1.5", "bge-small-en-v1.5", "embeddinggemma-300m"):
        entry = registry.get(model_id)
        assert entry.kind == "embedding" and entry.pooling in ("mean", "cls")
        planned = embed_plan(entry, Settings(), available=8 * 1024 * MIB, size=entry.size_bytes)
        assert planned.parallel == 1 and planned.fits
        assert planned.n_ctx_slot == min(entry.context_length, DEFAULT_EMBED_CONTEXT)
        # The weights plus well under a GiB: not the chat plan's slots and 32K pools.
        assert entry.size_bytes < planned.need_bytes < entry.size_bytes + 1024 * MIB
        chat = sizing.plan(entry, Settings(), available=8 * 1024 * MIB, size=entry.size_bytes)
        assert chat.parallel > 1  # what the chat formula would have planned
    small = registry.get("bge-small-en-v1.5")
    assert not embed_plan(small, Settings(), available=32 * MIB, size=small.size_bytes).fits


def test_a_causal_model_as_an_embedder_counts_its_logits() -> None:
    gemma = Registry.load(None).get("gemma-3-270m")
    as_encoder = embed_plan(gemma, Settings(), 64 * 1024 * MIB, gemma.size_bytes, architecture="")
    as_itself = embed_plan(
        gemma, Settings(), 64 * 1024 * MIB, gemma.size_bytes, architecture="gemma3"
    )
    logits = 2 * DEFAULT_EMBED_CONTEXT * 262_144 * 4  # compute and output buffers, f32
    assert as_itself.need_bytes - as_encoder.need_bytes == logits
    bert = embed_plan(gemma, Settings(), 64 * 1024 * MIB, gemma.size_bytes, architecture="bert")
    assert bert.need_bytes == as_encoder.need_bytes
