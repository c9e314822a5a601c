"""Tiny reranker GGUFs (rank pooling), written with the ``gguf`` package, for the rerank
tests: one of each kind llama.cpp scores.

``write_rank_model``: a BERT cross-encoder (bge-reranker's layout). llama.cpp's BERT
loader takes the optional classification head ``cls.weight`` / ``cls.bias`` (a dense
layer and tanh over the [CLS] token's vector) and ``cls.output.*`` (one score per label;
one label here), and with ``pooling_type`` rank each sequence's output is that score.
Its vocabulary is a WordPiece one written here ([PAD], [UNK], [CLS], [SEP], [MASK], then
a few hundred English words and letters), so a pair tokenizes as a real BERT reranker's
would, ``[CLS] query [SEP] document``. About 0.5 MB.

``write_qwen3_rank_model``: a causal Qwen3 reranker (Qwen3-Reranker's layout in
llama.cpp): the score is read at the last token, its two-label head gives
probabilities, and the pair is laid out by the GGUF's rerank template. About 0.4 MB.

The weights are random (fixed numpy seeds, so every run writes the same files): scores
from these files mean nothing. Tests check the shape of the answers (one score per
document, indices kept) and their order (sorted by score), never relevance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_WORD_TEXT = (
    "the a an of to and in is it that for on with as was are be this by at from or have "
    "not but what all were when we there can more if no out so said up its about into "
    "than them only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how "
    "too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three cat cats dog dogs bird fish "
    "sun moon star sky sea river tree forest city town road car train ship plane house "
    "room door window table chair book page word letter number code file line function "
    "class module test error value list dict string python rust java script server model "
    "client request response query document rank score search index vector token memory "
    "speed fast slow big small red blue green black white cold warm hot water fire earth "
    "paris london berlin rome france germany italy capital country language music art "
    "food bread apple banana orange milk coffee tea sleep run walk eat drink read write "
    "sit sat mat on under above below near far left right up down open close start stop"
)
WORDS = tuple(_WORD_TEXT.split())
"""Whole words; each becomes ``▁word`` (llama.cpp's WordPiece: a word start is marked
with U+2581, a continuation piece is written bare)."""

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(5)


def vocabulary() -> list[str]:
    """The token texts: the special tokens, the words, then single letters and digits as
    word starts and as continuation pieces (so any ASCII word tokenizes without [UNK])."""
    seen: dict[str, None] = dict.fromkeys(SPECIAL)
    for word in WORDS:
        seen["\u2581" + word] = None
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        seen["\u2581" + ch] = None
        seen[ch] = None
    for ch in ".,;:!?'\"()-":
        seen["\u2581" + ch] = None
    return list(seen)


def write_rank_model(
    path: Path,
    *,
    layers: int = 2,
    embd: int = 64,
    heads: int = 4,
    ff: int = 128,
    context: int = 512,
    seed: int = 0,
) -> Path:
    """Write the reranker to ``path`` and return it."""
    from gguf import GGUFWriter, PoolingType, TokenType

    rng = np.random.default_rng(seed)
    tokens = vocabulary()
    w = GGUFWriter(str(path), "bert")
    w.add_name("tiny-bert-reranker")
    w.add_context_length(context)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(PoolingType.RANK)
    w.add_file_type(0)  # all f32
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(
        [TokenType.CONTROL] * len(SPECIAL) + [TokenType.NORMAL] * (len(tokens) - len(SPECIAL))
    )
    w.add_token_type_count(2)
    w.add_pad_token_id(PAD)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(CLS)
    w.add_sep_token_id(SEP)
    w.add_mask_token_id(MASK)
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)

    def tensor(name: str, *dims: int, scale: float = 0.05) -> None:
        # numpy's shape is the reverse of ggml's ne: (rows, cols) = (ne1, ne0).
        w.add_tensor(name, (rng.standard_normal(dims[::-1]) * scale).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    def zeros(name: str, n: int) -> None:
        w.add_tensor(name, np.zeros(n, dtype=np.float32))

    tensor("token_embd.weight", embd, len(tokens), scale=0.5)
    tensor("token_types.weight", embd, 2)
    tensor("position_embd.weight", embd, context)
    ones("token_embd_norm.weight", embd)
    zeros("token_embd_norm.bias", embd)
    for i in range(layers):
        b = f"blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{b}.{part}.weight", embd, embd)
            zeros(f"{b}.{part}.bias", embd)
        ones(f"{b}.attn_output_norm.weight", embd)
        zeros(f"{b}.attn_output_norm.bias", embd)
        tensor(f"{b}.ffn_up.weight", embd, ff)
        zeros(f"{b}.ffn_up.bias", ff)
        tensor(f"{b}.ffn_down.weight", ff, embd)
        zeros(f"{b}.ffn_down.bias", embd)
        ones(f"{b}.layer_output_norm.weight", embd)
        zeros(f"{b}.layer_output_norm.bias", embd)
    # The classification head: dense + tanh, then one output (the relevance logit).
    tensor("cls.weight", embd, embd, scale=0.5)
    zeros("cls.bias", embd)
    tensor("cls.output.weight", embd, 1, scale=1.0)
    zeros("cls.output.bias", 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


QWEN3_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""The Qwen3 reranker's control tokens, after its 256 byte tokens."""

QWEN3_RERANK_TEMPLATE = (
    "<|im_start|>system\nSay yes if the document answers the query, else no.<|im_end|>\n"
    "<|im_start|>user\nQuery: {query}\nDocument: {document}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
"""The GGUF's rerank template (``tokenizer.chat_template.rerank``): llama.cpp fills in
``{query}`` and ``{document}``, as Qwen3-Reranker's own GGUF has it (in other words)."""


def _byte_tokens() -> list[str]:
    # GPT-2's byte-level alphabet: each byte as one printable character.
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_qwen3_rank_model(
    path: Path,
    *,
    layers: int = 2,
    embd: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    ff: int = 128,
    context: int = 1024,
    seed: int = 1,
) -> Path:
    """A tiny Qwen3 reranker in llama.cpp's layout for Qwen3-Reranker: causal attention
    (the score is read at the last token), a two-label head ``cls.output.weight``
    ("yes", "no") that llama.cpp turns into probabilities with a softmax, and a rerank
    template. Byte-level BPE without merges: one token per byte, the control tokens one
    each. Random weights (a fixed seed): its scores mean nothing either."""
    from gguf import GGUFWriter, PoolingType, TokenType

    rng = np.random.default_rng(seed)
    tokens = _byte_tokens() + list(QWEN3_SPECIAL)
    # llama.cpp wants at least one merge; this one joins bytes 0xFE 0xFF, which UTF-8
    # text never holds, so every other byte stays a token of its own.
    merge = (tokens[0xFE], tokens[0xFF])
    tokens.append("".join(merge))
    eos = tokens.index("<|endoftext|>")
    w = GGUFWriter(str(path), "qwen3")
    w.add_name("tiny-qwen3-reranker")
    w.add_context_length(context)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_pooling_type(PoolingType.RANK)
    w.add_classifier_output_labels(["yes", "no"])
    w.add_file_type(0)  # all f32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(
        [TokenType.NORMAL] * 256 + [TokenType.CONTROL] * len(QWEN3_SPECIAL) + [TokenType.NORMAL]
    )
    w.add_token_merges([" ".join(merge)])
    w.add_eos_token_id(eos)
    w.add_pad_token_id(eos)
    w.add_add_bos_token(False)
    w.add_chat_template([{"name": "rerank", "template": QWEN3_RERANK_TEMPLATE}])

    def tensor(name: str, *dims: int, scale: float = 0.05) -> None:
        w.add_tensor(name, (rng.standard_normal(dims[::-1]) * scale).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    q, kv = heads * head_dim, kv_heads * head_dim
    tensor("token_embd.weight", embd, len(tokens), scale=0.5)
    ones("output_norm.weight", embd)
    for i in range(layers):
        b = f"blk.{i}"
        ones(f"{b}.attn_norm.weight", embd)
        tensor(f"{b}.attn_q.weight", embd, q)
        tensor(f"{b}.attn_k.weight", embd, kv)
        tensor(f"{b}.attn_v.weight", embd, kv)
        tensor(f"{b}.attn_output.weight", q, embd)
        ones(f"{b}.attn_q_norm.weight", head_dim)
        ones(f"{b}.attn_k_norm.weight", head_dim)
        ones(f"{b}.ffn_norm.weight", embd)
        tensor(f"{b}.ffn_gate.weight", embd, ff)
        tensor(f"{b}.ffn_up.weight", embd, ff)
        tensor(f"{b}.ffn_down.weight", ff, embd)
    tensor("cls.output.weight", embd, 2, scale=1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


RANK_MODEL_ID = "tiny-bert-reranker"
QWEN3_RANK_MODEL_ID = "tiny-qwen3-reranker"


def qwen3_prompt_tokens(query: str, document: str) -> int:
    """How many tokens the Qwen3 reranker reads for an ASCII pair: one per byte of the
    filled-in template, one per control token."""
    prompt = QWEN3_RERANK_TEMPLATE.replace("{query}", query).replace("{document}", document)
    saved = sum((len(tok) - 1) * prompt.count(tok) for tok in QWEN3_SPECIAL)
    return len(prompt.encode()) - saved


def rank_model(folder: Path) -> Path:
    """The rerankers' GGUFs (the BERT one first, then the Qwen3 one) and a models.toml
    overlay naming them as ``kind = "rerank"`` entries (``--models-file``), written in
    ``folder``; returns the overlay's path."""
    folder.mkdir(parents=True, exist_ok=True)
    bert = folder / f"{RANK_MODEL_ID}.gguf"
    qwen3 = folder / f"{QWEN3_RANK_MODEL_ID}.gguf"
    if not bert.is_file():
        write_rank_model(bert)
    if not qwen3.is_file():
        write_qwen3_rank_model(qwen3)
    entries = []
    for model_id, path, context, what in (
        (RANK_MODEL_ID, bert, 512, "BERT"),
        (QWEN3_RANK_MODEL_ID, qwen3, 1024, "Qwen3"),
    ):
        entries.append(
            "[[models]]\n"
            f'id = "{model_id}"\n'
            f'name = "Tiny {what} reranker (test, random weights)"\n'
            f'description = "A generated rank-pooling {what}: its scores mean nothing."\n'
            f"path = {str(path)!r}\n"
            'kind = "rerank"\n'
            'pooling = "rank"\n'
            f"size_bytes = {path.stat().st_size}\n"
            f"context_length = {context}\n"
        )
    overlay = folder / "models.toml"
    overlay.write_text("\n".join(entries), encoding="utf-8")
    return overlay
