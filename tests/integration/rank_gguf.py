"""A tiny BERT reranker GGUF (rank pooling), written with the ``gguf`` package, for the
rerank tests.

llama.cpp's BERT loader takes the optional classification head ``cls.weight`` /
``cls.bias`` (a dense layer and tanh over the [CLS] token's vector) and ``cls.output.*``
(one score per label; one label here), and with ``pooling_type`` rank each sequence's
output is that score. The vocabulary is a WordPiece one written here ([PAD], [UNK],
[CLS], [SEP], [MASK], then a few hundred English words and letters), so a query and a
document tokenize the way a real BERT reranker's would: ``[CLS] query [SEP] document [SEP]``.

The weights are random (a fixed numpy seed, so every run writes the same file): scores
from this file mean nothing. Tests check the shape of the answers (one score per
document, indices kept) and their order (sorted by score), never relevance.
``write_rank_model(path)`` writes it (about 2 MB).
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


RANK_MODEL_ID = "tiny-bert-reranker"


def rank_model(folder: Path) -> Path:
    """The reranker's GGUF and a models.toml overlay naming it as a ``kind = "rerank"``
    entry (``--models-file``), written in ``folder``; returns the overlay's path."""
    folder.mkdir(parents=True, exist_ok=True)
    gguf_path = folder / f"{RANK_MODEL_ID}.gguf"
    if not gguf_path.is_file():
        write_rank_model(gguf_path)
    overlay = folder / "models.toml"
    overlay.write_text(
        "[[models]]\n"
        f'id = "{RANK_MODEL_ID}"\n'
        'name = "Tiny BERT reranker (test, random weights)"\n'
        'description = "A generated rank-pooling BERT: its scores mean nothing."\n'
        f"path = {str(gguf_path)!r}\n"
        'kind = "rerank"\n'
        'pooling = "rank"\n'
        f"size_bytes = {gguf_path.stat().st_size}\n"
        "context_length = 512\n",
        encoding="utf-8",
    )
    return overlay
