"""The generated rerankers (rank_gguf.py) load in llama.cpp with rank pooling and give
one score per query-document pair, decoded together in one batch. Their weights are
random: the tests check that scores exist, are finite, differ between documents and do
not depend on what else shares the batch, not that they rank anything well."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rank_gguf import (
    CLS,
    QWEN3_RERANK_TEMPLATE,
    SEP,
    qwen3_prompt_tokens,
    write_qwen3_rank_model,
    write_rank_model,
)

pytestmark = pytest.mark.integration

QUERY = "what is the capital of france"
DOCS = ("paris is the capital of france", "the cat sat on the mat", "python code test")


def _scores(model: object, pairs: list[list[int]]) -> list[list[float]]:
    """Decode ``pairs`` as sequences of one batch; each sequence's rank output."""
    import llama_cpp

    ctx = model._ctx.ctx  # type: ignore[attr-defined]
    n_out = llama_cpp.llama_model_n_cls_out(model._model.model)  # type: ignore[attr-defined]
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    total = sum(len(p) for p in pairs)
    batch = llama_cpp.llama_batch_init(total, 0, 1)
    try:
        n = 0
        for seq, tokens in enumerate(pairs):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        assert llama_cpp.llama_decode(ctx, batch) == 0
        out = []
        for seq in range(len(pairs)):
            ptr = llama_cpp.llama_get_embeddings_seq(ctx, seq)
            out.append([float(ptr[i]) for i in range(n_out)])
        return out
    finally:
        llama_cpp.llama_batch_free(batch)


def test_the_generated_reranker_scores_each_pair(tmp_path: Path) -> None:
    import llama_cpp

    path = write_rank_model(tmp_path / "rank.gguf")
    assert path.stat().st_size < 8 << 20
    model = llama_cpp.Llama(
        str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_seq_max=4,
        verbose=False,
    )
    try:
        assert model.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_RANK
        query = model.tokenize(QUERY.encode(), add_bos=True, special=True)
        assert query[0] == CLS and query[-1] == SEP
        assert 1 not in query  # every word is in the vocabulary: no [UNK]
        pairs = [query + model.tokenize(doc.encode(), add_bos=False, special=True) for doc in DOCS]
        together = _scores(model, pairs)
        assert [len(s) for s in together] == [1, 1, 1]
        scores = [s[0] for s in together]
        assert all(math.isfinite(s) for s in scores)
        assert len(set(scores)) == len(scores), scores
        alone = [_scores(model, [pair])[0][0] for pair in pairs]
        assert alone == pytest.approx(scores, rel=1e-3, abs=1e-3)
    finally:
        model.close()


def test_the_generated_qwen3_reranker_gives_probabilities(tmp_path: Path) -> None:
    import llama_cpp

    path = write_qwen3_rank_model(tmp_path / "qwen3.gguf")
    assert path.stat().st_size < 8 << 20
    model = llama_cpp.Llama(
        str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
        n_ctx=1024,
        n_batch=1024,
        n_ubatch=1024,
        n_seq_max=4,
        verbose=False,
    )
    try:
        raw = llama_cpp.llama_model_chat_template(model._model.model, b"rerank")
        assert raw is not None and raw.decode() == QWEN3_RERANK_TEMPLATE
        pairs = []
        for doc in DOCS:
            prompt = QWEN3_RERANK_TEMPLATE.replace("{query}", QUERY).replace("{document}", doc)
            tokens = model.tokenize(prompt.encode(), add_bos=False, special=True)
            assert len(tokens) == qwen3_prompt_tokens(QUERY, doc)
            pairs.append(tokens)
        together = _scores(model, pairs)
        # Two labels (yes, no) through llama.cpp's softmax: probabilities summing to 1.
        assert all(len(s) == 2 and sum(s) == pytest.approx(1.0, abs=1e-5) for s in together)
        assert all(0.0 < s[0] < 1.0 for s in together)
        assert len({s[0] for s in together}) == len(DOCS)
        alone = [_scores(model, [pair])[0][0] for pair in pairs]
        assert alone == pytest.approx([s[0] for s in together], rel=1e-3, abs=1e-4)
    finally:
        model.close()


def test_the_files_are_the_same_every_time(tmp_path: Path) -> None:
    for write in (write_rank_model, write_qwen3_rank_model):
        a = write(tmp_path / "a.gguf").read_bytes()
        b = write(tmp_path / "b.gguf").read_bytes()
        assert a == b
