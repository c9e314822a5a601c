"""The memory plan of an embedding or rerank model (registry ``kind`` other than "chat").

Such a model has no generation slots and no shared KV pool: one context of its own size
(its trained context, capped) holds every batch, and the whole batch is one ubatch
(engine/llama/embed_loop.py). What it takes is the weights, the KV cache of that one
context (none for encoder models without one; counted anyway, an upper bound), and a
compute buffer that grows with the ubatch, here the whole context: the activations, and
the attention matrix (context x context per head: the engine runs without flash
attention, see embedding.py). A causal language model used as an embedder (a chat model's
GGUF, Qwen3-Embedding) also computes its output layer for every token, as llama.cpp does
for pooled embeddings: logits of the whole vocabulary, in the compute buffer and in the
output buffer, for a context's worth of tokens; an encoder has no output layer.
"""

from __future__ import annotations

from pathlib import Path

from locallab_cpp.config import Settings
from locallab_cpp.models import sizing
from locallab_cpp.models.gguf_info import gguf_info
from locallab_cpp.models.registry import ModelSpec

DEFAULT_EMBED_CONTEXT = 2048
"""The context an embedding model gets when --n-ctx is not set and it was trained on more:
the whole context is one ubatch, whose compute buffer grows with it, and embedding inputs
are chunks of a document (Continue and Roo Code send a few hundred tokens each)."""
EMBED_SEQ_MAX = 64
"""Inputs one decode batch holds at most (the inputs of several requests together)."""
ACTIVATION_BYTES_PER_TOKEN_EMBD = 24
"""Compute-buffer bytes per token of the ubatch per embedding dimension: a handful of f32
activations of each token alive at once, with slack (llama.cpp's graph reuses buffers)."""
ATTENTION_HEADS = 16
"""Heads the attention matrix is counted for (f32, context x context each): as many as the
small embedding models have or more (BERT-base and nomic-embed have 12)."""


ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "modern-bert",
        "eurobert",
        "gemma-embedding",
        "t5encoder",
    }
)
"""llama.cpp's architectures of encoders, which have no output layer (and no KV cache)."""


def file_architecture(path: Path | None) -> str:
    """``general.architecture`` of the GGUF at ``path`` ("" when there is no readable file)."""
    if path is None:
        return ""
    try:
        return gguf_info(path).architecture
    except (OSError, ValueError):
        return ""


def embed_context(trained: int, settings: Settings) -> int:
    """Tokens of one input at most: the trained context, capped by --n-ctx when set, else
    by DEFAULT_EMBED_CONTEXT."""
    cap = settings.n_ctx or DEFAULT_EMBED_CONTEXT
    return max(1, min(trained, cap) if trained else cap)


def embed_plan(
    spec: ModelSpec,
    settings: Settings,
    available: int,
    size: int,
    n_embd: int = 0,
    architecture: str = "",
) -> sizing.MemoryPlan:
    """The plan of an embedding model: weights, one context of :func:`embed_context` tokens
    and its compute buffer, against ``available`` bytes. ``architecture`` is the GGUF's
    (:func:`file_architecture`): one that is no encoder adds its logits; "" (no file yet)
    counts none, as the registry's embedding models are encoders."""
    context = embed_context(spec.context_length, settings)
    file_bytes = size or spec.size_bytes
    vocab = spec.vocab_size or sizing.DEFAULT_VOCAB
    kv = sizing.kv_bytes_per_token(spec, settings) * context if spec.layers else 0
    width = n_embd or (spec.kv_heads * spec.head_dim) or 1024
    activations = context * width * ACTIVATION_BYTES_PER_TOKEN_EMBD
    activations += context * context * 4 * ATTENTION_HEADS
    if architecture and architecture not in ENCODER_ARCHITECTURES:
        activations += 2 * context * vocab * 4  # f32 logits: compute and output buffers
    need = file_bytes + vocab * sizing.TOKENIZER_BYTES + kv + activations + sizing.RUNTIME_BYTES
    reason = (
        f"embedding context {context} tokens, up to {EMBED_SEQ_MAX} inputs a batch; needs "
        f"{need // sizing.MIB} MB of {available // sizing.MIB} MB available"
    )
    return sizing.MemoryPlan(
        n_ctx_slot=context,
        parallel=1,
        pool_tokens=context,
        kv_bytes=kv,
        need_bytes=need,
        available_bytes=available,
        reason=reason,
        n_ctx_reason="set" if settings.n_ctx else "the trained context, capped for embeddings",
    )
