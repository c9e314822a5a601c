"""Writes .device/tiny.gguf: a random-weight llama-architecture model with an SPM vocab.

Run here (needs numpy and gguf-py: PYTHONPATH=<llama.cpp>/gguf-py). Output is gibberish.
"""
import sys
from pathlib import Path

import gguf
import numpy as np

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 4, 256, 4, 4, 512, 4096
N_VOCAB = 1024
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("tiny.gguf"))

# --- SPM vocab: <unk> <s> </s>, 256 byte tokens, printable characters, some words
tokens: list[str] = ["<unk>", "<s>", "</s>"]
types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
scores = [0.0, 0.0, 0.0]
for b in range(256):
    tokens.append(f"<0x{b:02X}>"); types.append(gguf.TokenType.BYTE); scores.append(0.0)
pieces = ["\u2581"] + [chr(c) for c in range(33, 127)]
words = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "hello", "world", "GPU", "CUDA", "llama", "model", "token", "fast", "chat", "answer", "question", "server", "local", "lab"]
pieces += ["\u2581" + w for w in words]
for w in words:
    for k in range(1, len(w)):
        pieces.append("\u2581" + w[:k])
seen = set(tokens)
for p in pieces:
    if p not in seen and len(tokens) < N_VOCAB:
        seen.add(p); tokens.append(p); types.append(gguf.TokenType.NORMAL)
        scores.append(-float(len(tokens)) / 1000.0 if len(p) == 1 else float(len(p)))
while len(tokens) < N_VOCAB:
    tokens.append(f"<unused{len(tokens)}>"); types.append(gguf.TokenType.UNUSED); scores.append(-1e4)

rng = np.random.default_rng(1234)


def mat(rows: int, cols: int, scale: float | None = None) -> np.ndarray:
    s = scale if scale is not None else 1.0 / np.sqrt(cols)
    return (rng.standard_normal((rows, cols)) * s).astype(np.float32)


def q8(a: np.ndarray) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    t = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(a, t), t


w = gguf.GGUFWriter(str(out), "llama")
w.add_name("tiny-random-llama")
w.add_description("random weights, for offload smoke tests; output is gibberish")
w.add_context_length(N_CTX)
w.add_embedding_length(N_EMBD)
w.add_block_count(N_LAYER)
w.add_feed_forward_length(N_FF)
w.add_head_count(N_HEAD)
w.add_head_count_kv(N_HEAD_KV)
w.add_rope_dimension_count(N_EMBD // N_HEAD)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
w.add_vocab_size(N_VOCAB)
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.add_add_bos_token(True)
w.add_add_eos_token(False)

emb = mat(N_VOCAB, N_EMBD, 1.0)
out_w = mat(N_VOCAB, N_EMBD)
out_w[:259] = 0.0  # control and byte tokens never win a greedy pick: text keeps flowing
t, ty = q8(emb); w.add_tensor("token_embd.weight", t, raw_dtype=ty)
for i in range(N_LAYER):
    w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        t, ty = q8(mat(N_EMBD, N_EMBD)); w.add_tensor(f"blk.{i}.{name}.weight", t, raw_dtype=ty)
    w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
    t, ty = q8(mat(N_FF, N_EMBD)); w.add_tensor(f"blk.{i}.ffn_gate.weight", t, raw_dtype=ty)
    t, ty = q8(mat(N_FF, N_EMBD)); w.add_tensor(f"blk.{i}.ffn_up.weight", t, raw_dtype=ty)
    t, ty = q8(mat(N_EMBD, N_FF)); w.add_tensor(f"blk.{i}.ffn_down.weight", t, raw_dtype=ty)
w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
t, ty = q8(out_w); w.add_tensor("output.weight", t, raw_dtype=ty)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, out.stat().st_size, "bytes,", len(tokens), "tokens")
