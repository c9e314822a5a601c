"""The generated reranker (rank_gguf.py) loads in llama.cpp with rank pooling and gives
one score per query-document pair, decoded together in one batch. Its weights are random:
the test checks that scores exist, are finite, differ between documents and do not
depend on what else shares the batch, not that they rank anything well."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rank_gguf import CLS, SEP, write_rank_model

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


def test_the_file_is_the_same_every_time(tmp_path: Path) -> None:
    a = write_rank_model(tmp_path / "a.gguf").read_bytes()
    b = write_rank_model(tmp_path / "b.gguf").read_bytes()
    assert a == b
