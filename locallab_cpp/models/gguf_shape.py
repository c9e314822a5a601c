"""The figures of a model's shape that its memory depends on, read from its GGUF header.

``<arch>.block_count`` (layers), ``<arch>.attention.head_count_kv`` (a number, or one per
layer), ``<arch>.attention.key_length`` / ``value_length`` (else ``embedding_length /
head_count``), ``<arch>.attention.sliding_window``, the vocabulary's length
(``tokenizer.ggml.tokens``), ``<arch>.context_length`` and, for a mixture of experts,
``<arch>.expert_count`` / ``expert_used_count``. The header is read by
:func:`~locallab_cpp.models.gguf_info.gguf_info` (no weights, cached per path, size and
mtime); blocking the first time, so callers run off the event loop.

Which layers slide is not in the file for most architectures: llama.cpp decides it per
architecture (llama-model.cpp, ``hparams.set_swa_pattern(n)``: layer ``il`` slides when
``il % n < n - 1``, so the last of every ``n`` attends to everything). :data:`SWA_PATTERNS`
holds those ``n``; a file that names its own pattern
(``<arch>.attention.sliding_window_pattern``, one bool per layer) is believed, and a window
in an architecture not listed is ignored (every layer counted whole: too much, never too
little). Experts change nothing here: every expert's weights are read into memory, which the
file size already counts, and the KV cache does not depend on them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from locallab_cpp.engine.llama.gguf import GGUFError
from locallab_cpp.models.gguf_info import GGUFInfo, gguf_info
from locallab_cpp.models.registry import ModelSpec

logger = logging.getLogger("locallab_cpp")

SWA_PATTERNS: dict[str, int] = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma-embedding": 6,
    "cohere2": 4,
    "gpt-oss": 2,
}
"""llama.cpp's ``set_swa_pattern(n)`` of each architecture whose layers alternate between a
sliding window and full attention (llama-model.cpp's load_hparams)."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the memory estimate needs from a GGUF header (0 where the file does not say)."""

    architecture: str
    layers: int
    kv_heads: int
    """Key/value heads of a layer that has attention (the mean, rounded up, where the file
    gives one figure per layer: exact when those layers agree)."""
    kv_layers: int
    """Layers that hold a KV cache (a per-layer head count of 0 means none)."""
    head_dim: int
    """(key_length + value_length) / 2, rounded up: exact for the estimate's bytes a token
    when the key and value caches have the same type."""
    swa_window: int
    swa_layers: int
    """Layers of :attr:`kv_layers` that keep only a window."""
    vocab_size: int
    context_length: int
    expert_count: int = 0
    expert_used_count: int = 0

    @property
    def complete(self) -> bool:
        """Whether the KV cache can be computed from these figures."""
        return bool(self.kv_layers and self.kv_heads and self.head_dim)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    return 0


def _heads(value: Any, layers: int) -> tuple[int, int]:
    """(heads per layer that has any, layers that have any) from a number or a list."""
    if isinstance(value, list):
        counts = [_int(v) for v in value[:layers] if _int(v) > 0]
        if not counts:
            return 0, 0
        return math.ceil(sum(counts) / len(counts)), len(counts)
    return _int(value), layers if _int(value) else 0


def swa_layer_count(architecture: str, layers: int, pattern: Any = None) -> int:
    """How many of ``layers`` slide: from the file's own pattern (a list of bools), else
    llama.cpp's rule for the architecture (0 where it has none)."""
    if isinstance(pattern, list) and pattern:
        return sum(1 for flag in pattern[:layers] if flag)
    every = SWA_PATTERNS.get(architecture, 0)
    if not every:
        return 0
    return sum(1 for il in range(layers) if il % every < every - 1)


def shape_of(info: GGUFInfo) -> ModelShape:
    """The shape the header of ``info`` describes."""
    meta = info.metadata
    arch = info.architecture

    def get(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    layers = _int(get("block_count"))
    heads = get("attention.head_count")
    q_heads, _ = _heads(heads, layers)
    kv_value = get("attention.head_count_kv")
    kv_heads, kv_layers = _heads(kv_value if kv_value is not None else heads, layers)
    if kv_value is None and f"{arch}.attention.head_count_kv" in info.array_lengths:
        kv_heads, kv_layers = 0, 0  # a per-layer list longer than the reader keeps
    fallback = _int(get("embedding_length")) // q_heads if q_heads else 0
    key_len = _int(get("attention.key_length")) or fallback
    value_len = _int(get("attention.value_length")) or fallback
    window = _int(get("attention.sliding_window"))
    swa = swa_layer_count(arch, kv_layers, get("attention.sliding_window_pattern"))
    if not window or not swa:
        window, swa = 0, 0
    return ModelShape(
        architecture=arch,
        layers=layers,
        kv_heads=kv_heads,
        kv_layers=kv_layers,
        head_dim=math.ceil((key_len + value_len) / 2),
        swa_window=window,
        swa_layers=min(swa, kv_layers),
        vocab_size=info.array_lengths.get("tokenizer.ggml.tokens", 0),
        context_length=_int(get("context_length")),
        expert_count=_int(get("expert_count")),
        expert_used_count=_int(get("expert_used_count")),
    )


def read_shape(path: Path) -> ModelShape | None:
    """The shape of the GGUF at ``path`` (None if it cannot be read). Blocking the first
    time for each file (gguf_info caches the header)."""
    try:
        return shape_of(gguf_info(path))
    except (GGUFError, OSError) as exc:
        logger.debug("no shape from %s: %s", path.name, exc)
        return None


def with_file_shape(spec: ModelSpec, path: Path | None) -> ModelSpec:
    """``spec`` with the architecture figures of its GGUF at ``path`` in place of the
    registry's (which stay where the file is absent, unreadable or silent). Blocking."""
    shape = read_shape(path) if path is not None else None
    if shape is None:
        return spec
    changes: dict[str, int] = {}
    if shape.complete:
        changes.update(
            layers=shape.kv_layers,
            kv_heads=shape.kv_heads,
            head_dim=shape.head_dim,
            swa_window=shape.swa_window,
            swa_layers=shape.swa_layers,
        )
    if shape.vocab_size:
        changes["vocab_size"] = shape.vocab_size
    if shape.context_length:
        changes["context_length"] = shape.context_length
    return msgspec.structs.replace(spec, **changes) if changes else spec
