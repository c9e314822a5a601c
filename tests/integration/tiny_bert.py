"""A tiny BERT GGUF (random f32 weights, a made-up WordPiece vocabulary), written with the
``gguf`` package: an encoder without a KV cache, as the registry's embedding models are
(bert, nomic-bert, gemma-embedding), for the embedding engine's tests. Its vectors mean
nothing; llama.cpp computes them as for a real BERT (CLS pooling, [CLS] ... [SEP])."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = [
    f"\u2581{w}" for w in ("hello", "world", "the", "cat", "sat", "on", "mat", "a", "dog", "ran")
]
"""Whole words, as llama.cpp's converter writes a WordPiece vocabulary: "\u2581" before each."""
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
EMBD = 64
LAYERS = 2
HEADS = 4
CONTEXT = 128


def write_bert(path: Path, seed: int = 0, rerank_template: str | None = None) -> Path:
    """Write the tiny BERT to ``path`` (CLS pooling declared in its header), with
    ``rerank_template`` as its ``tokenizer.chat_template.rerank`` when given."""
    from gguf import GGUFWriter, PoolingType

    rng = np.random.default_rng(seed)
    tokens = SPECIAL + WORDS + [f"w{i}" for i in range(64)]
    w = GGUFWriter(str(path), "bert")
    w.add_name("tiny-bert")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBD)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(4 * EMBD)
    w.add_head_count(HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(PoolingType.CLS)
    w.add_file_type(0)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))
    w.add_token_type_count(2)
    w.add_unk_token_id(UNK)
    w.add_pad_token_id(PAD)
    w.add_bos_token_id(CLS)
    w.add_sep_token_id(SEP)
    w.add_mask_token_id(MASK)
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)
    if rerank_template is not None:
        w.add_chat_template([{"name": "rerank", "template": rerank_template}])

    def tensor(name: str, *dims: int) -> None:
        w.add_tensor(name, (rng.standard_normal(dims[::-1]) * 0.05).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    def zeros(name: str, n: int) -> None:
        w.add_tensor(name, np.zeros(n, dtype=np.float32))

    tensor("token_embd.weight", EMBD, len(tokens))
    tensor("token_types.weight", EMBD, 2)
    tensor("position_embd.weight", EMBD, CONTEXT)
    ones("token_embd_norm.weight", EMBD)
    zeros("token_embd_norm.bias", EMBD)
    for i in range(LAYERS):
        b = f"blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{b}.{part}.weight", EMBD, EMBD)
            zeros(f"{b}.{part}.bias", EMBD)
        ones(f"{b}.attn_output_norm.weight", EMBD)
        zeros(f"{b}.attn_output_norm.bias", EMBD)
        tensor(f"{b}.ffn_up.weight", EMBD, 4 * EMBD)
        zeros(f"{b}.ffn_up.bias", 4 * EMBD)
        tensor(f"{b}.ffn_down.weight", 4 * EMBD, EMBD)
        zeros(f"{b}.ffn_down.bias", EMBD)
        ones(f"{b}.layer_output_norm.weight", EMBD)
        zeros(f"{b}.layer_output_norm.bias", EMBD)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
