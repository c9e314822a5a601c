"""Small GGUFs of chosen shapes, written with the ``gguf`` package, for the memory tests.

Random f32 weights (a few MB) and a made-up sentencepiece vocabulary: llama.cpp loads them
and computes with them, so their KV cache, buffers and resident memory are real; what they
write means nothing. ``write_model(path, arch="llama" | "gemma3", ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    """What a generated model looks like."""

    arch: str = "llama"
    layers: int = 4
    embd: int = 256
    heads: int = 8
    kv_heads: int = 8
    head_dim: int = 32
    ff: int = 512
    vocab: int = 512
    context: int = 65536
    window: int = 0
    """gemma3's attention.sliding_window (0: none written)."""
    experts: int = 0
    """Mixture of experts (llama layout, ``ffn_*_exps``) with ``experts_used`` active."""
    experts_used: int = 0


def _vocab(writer: object, n: int) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(n - 3)]
    types = [2, 3, 3] + [1] * (n - 3)
    writer.add_tokenizer_model("llama")  # type: ignore[attr-defined]
    writer.add_token_list(tokens)  # type: ignore[attr-defined]
    writer.add_token_scores([-float(i) for i in range(n)])  # type: ignore[attr-defined]
    writer.add_token_types(types)  # type: ignore[attr-defined]
    writer.add_unk_token_id(0)  # type: ignore[attr-defined]
    writer.add_bos_token_id(1)  # type: ignore[attr-defined]
    writer.add_eos_token_id(2)  # type: ignore[attr-defined]


def write_model(path: Path, shape: Shape, seed: int = 0) -> Path:
    """Write a model of ``shape`` to ``path``."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    s = shape
    w = GGUFWriter(str(path), s.arch)
    w.add_name(f"tiny-{s.arch}")
    w.add_context_length(s.context)
    w.add_embedding_length(s.embd)
    w.add_block_count(s.layers)
    w.add_feed_forward_length(s.ff)
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(0)  # all f32
    if s.arch == "llama":
        w.add_rope_dimension_count(s.head_dim)
    if s.window:
        w.add_sliding_window(s.window)
    if s.experts:
        w.add_expert_count(s.experts)
        w.add_expert_used_count(s.experts_used)
    _vocab(w, s.vocab)

    def tensor(name: str, *dims: int) -> None:
        # numpy's shape is the reverse of ggml's ne: (rows, cols) = (ne1, ne0).
        data = (rng.standard_normal(dims[::-1]) * 0.02).astype(np.float32)
        w.add_tensor(name, data)

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    tensor("token_embd.weight", s.embd, s.vocab)
    norm("output_norm.weight", s.embd)
    if s.arch == "llama":
        tensor("output.weight", s.embd, s.vocab)
    for i in range(s.layers):
        b = f"blk.{i}"
        norm(f"{b}.attn_norm.weight", s.embd)
        tensor(f"{b}.attn_q.weight", s.embd, q)
        tensor(f"{b}.attn_k.weight", s.embd, kv)
        tensor(f"{b}.attn_v.weight", s.embd, kv)
        tensor(f"{b}.attn_output.weight", q, s.embd)
        norm(f"{b}.ffn_norm.weight", s.embd)
        if s.experts:
            tensor(f"{b}.ffn_gate_inp.weight", s.embd, s.experts)
            tensor(f"{b}.ffn_gate_exps.weight", s.embd, s.ff, s.experts)
            tensor(f"{b}.ffn_up_exps.weight", s.embd, s.ff, s.experts)
            tensor(f"{b}.ffn_down_exps.weight", s.ff, s.embd, s.experts)
        else:
            tensor(f"{b}.ffn_gate.weight", s.embd, s.ff)
            tensor(f"{b}.ffn_up.weight", s.embd, s.ff)
            tensor(f"{b}.ffn_down.weight", s.ff, s.embd)
        if s.arch == "gemma3":
            norm(f"{b}.attn_q_norm.weight", s.head_dim)
            norm(f"{b}.attn_k_norm.weight", s.head_dim)
            norm(f"{b}.post_attention_norm.weight", s.embd)
            norm(f"{b}.post_ffw_norm.weight", s.embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
