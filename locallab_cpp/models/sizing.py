"""How much memory a model needs once loaded: its file, its KV cache, and working buffers.

The KV cache holds ``n_ctx x parallel`` token cells. Each cell stores a key and a value
vector per layer and KV head, in f16 (llama.cpp's default cache type), so a token costs
``2 x layers x kv_heads x head_dim x 2`` bytes. Registry entries that record their
architecture get this exact figure; for the others it is guessed from the file size.
"""

from __future__ import annotations

from locallab_cpp import config
from locallab_cpp.config import Settings
from locallab_cpp.models.registry import ModelSpec

F16_BYTES = 2

# Without the architecture, a token's KV bytes are guessed as file size / this divisor.
# Measured on the registry's models it ranges from about 6,000 (phi-2, no grouped-query
# attention) to 40,000 (Qwen2.5 0.5B); 16,384 errs towards reporting too much.
KV_GUESS_DIVISOR = 16_384

# Compute buffers and runtime beyond file and cache: llama.cpp's scratch buffers grow with
# the model, the rest (Python, the server) is roughly fixed.
BUFFER_SHARE = 0.10
RUNTIME_BYTES = 256 * 1024 * 1024


def slot_context(spec: ModelSpec, settings: Settings) -> int:
    """Tokens of context per slot, as the engine will configure it."""
    return config.slot_context(settings.n_ctx, spec.context_length)


def kv_bytes_per_token(spec: ModelSpec, settings: Settings | None = None) -> int:
    """Bytes of KV cache one token takes (exact when the registry gives the architecture),
    in the cache types of ``settings`` (f16 keys and values when None)."""
    scale = config.cache_bytes_per_pair(settings) / (2 * F16_BYTES)
    if spec.layers and spec.kv_heads and spec.head_dim:
        return round(2 * spec.layers * spec.kv_heads * spec.head_dim * F16_BYTES * scale)
    return max(1, round(spec.size_bytes // KV_GUESS_DIVISOR * scale))


def kv_cache_bytes(spec: ModelSpec, settings: Settings) -> int:
    """Bytes of the whole KV cache: every slot's context."""
    return kv_bytes_per_token(spec, settings) * slot_context(spec, settings) * settings.parallel


def estimated_need(spec: ModelSpec, settings: Settings | None = None, size: int = 0) -> int:
    """Bytes of memory the model is expected to take once loaded.

    ``size`` is the file's size on disk when known (else the registry's figure).
    """
    settings = settings or Settings()
    file_bytes = size or spec.size_bytes
    return (
        file_bytes + kv_cache_bytes(spec, settings) + int(file_bytes * BUFFER_SHARE) + RUNTIME_BYTES
    )
