"""POST /v1/rerank (and /rerank, /v1/reranking, /reranking) over a fake rank-pooling
engine: the answer's shape, the sort, ``top_n``, ``return_documents``, ``{text}``
documents, one embed call for all pairs, long documents cut to fit, and the refusals in
llama-server's error body.

The fake reranker (fake_reranker.py) scores a pair by how many of the document's words
are in the query (less a little per word, so that ties are rare): made up, but it gives
the tests an order they can predict."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_reranker import CLS, FakeReranker, RerankFactory
from helpers import make_client
from litestar.testing import TestClient

from locallab_cpp.errors import InvalidRequest, PayloadTooLarge
from locallab_cpp.models.registry import ModelSpec
from locallab_cpp.serving import rerank as serving_rerank

RERANK_TOML = """
[[models]]
id = "ranker"
name = "Ranker Test Model"
description = "A rerank model."
path = "ranker.gguf"
kind = "rerank"
pooling = "rank"
size_bytes = 100

[[models]]
id = "embedder"
name = "Embedder Test Model"
description = "An embedding model, not a reranker."
path = "ranker.gguf"
kind = "embedding"
size_bytes = 100
"""

QUERY = "where is the cat"
DOCS = ["the dog runs", "the cat is on the mat", "cat", "nothing here at all"]


@pytest.fixture
def rerank_file(models_file: Path) -> Path:
    (models_file.parent / "ranker.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    models_file.write_text(models_file.read_text() + RERANK_TOML, encoding="utf-8")
    return models_file


@contextmanager
def client(models_file: Path) -> Iterator[tuple[TestClient[Any], RerankFactory]]:
    factory = RerankFactory()
    with make_client(models_file, factory) as http:
        yield http, factory


@pytest.fixture
def http(rerank_file: Path) -> Iterator[tuple[TestClient[Any], RerankFactory]]:
    with client(rerank_file) as pair:
        yield pair


def llama_error(response: Any, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == status and error["type"] and error["message"]
    for needle in needles:
        assert needle in error["message"], (needle, error["message"])
    return str(error["message"])


def expected_order(query: str, docs: Sequence[str]) -> list[int]:
    words = set(query.split())

    def score(d: str) -> float:
        return sum(w in words for w in d.split()) - 0.01 * len(d.split())

    return sorted(range(len(docs)), key=lambda i: (-score(docs[i]), i))


def test_results_sorted_by_score_with_their_indices(
    http: tuple[TestClient[Any], RerankFactory],
) -> None:
    c, factory = http
    r = c.post("/v1/rerank", json={"model": "ranker", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "object", "results", "usage"}
    assert body["model"] == "ranker" and body["object"] == "list"
    results = body["results"]
    assert [x["index"] for x in results] == expected_order(QUERY, DOCS)
    assert all(set(x) == {"index", "relevance_score"} for x in results)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    # All pairs went to the engine in one embed call, each [CLS] query [SEP] document.
    [reranker] = factory.rerankers
    [call] = reranker.embed_calls
    assert len(call) == len(DOCS) and all(p[0] == CLS for p in call)
    total = sum(len(p) for p in call)
    assert body["usage"] == {"prompt_tokens": total, "total_tokens": total}


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"])
def test_every_llama_server_path_answers(
    http: tuple[TestClient[Any], RerankFactory], path: str
) -> None:
    c, _ = http
    r = c.post(path, json={"model": "ranker", "query": QUERY, "documents": DOCS[:2]})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == [1, 0]


def test_top_n_and_return_documents(http: tuple[TestClient[Any], RerankFactory]) -> None:
    c, _ = http
    data = {
        "model": "ranker",
        "query": QUERY,
        "documents": DOCS,
        "top_n": 2,
        "return_documents": True,
    }
    r = c.post("/v1/rerank", json=data)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    order = expected_order(QUERY, DOCS)
    assert [x["index"] for x in results] == order[:2]
    assert [x["document"] for x in results] == [{"text": DOCS[i]} for i in order[:2]]
    # More than there are: all of them; null fields are their defaults.
    data = {
        "model": "ranker",
        "query": QUERY,
        "documents": DOCS,
        "top_n": 99,
        "return_documents": None,
    }
    r = c.post("/rerank", json=data)
    assert [x["index"] for x in r.json()["results"]] == order
    assert "document" not in r.json()["results"][0]


def test_text_objects_and_strings_mixed_and_unknown_fields(
    http: tuple[TestClient[Any], RerankFactory],
) -> None:
    c, _ = http
    documents = [{"text": DOCS[0], "title": "ignored"}, DOCS[1], {"text": DOCS[2]}]
    data = {
        "model": "ranker",
        "query": QUERY,
        "documents": documents,
        "return_documents": True,
        "rank_fields": None,
    }
    r = c.post("/v1/rerank", json=data)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == expected_order(QUERY, DOCS[:3])
    assert {x["index"]: x["document"]["text"] for x in results} == dict(enumerate(DOCS[:3]))


def test_no_model_named_takes_the_first_rerank_model(
    http: tuple[TestClient[Any], RerankFactory],
) -> None:
    c, factory = http
    r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "ranker"
    assert factory.opened[-1][0] == "ranker"


def test_no_model_named_prefers_a_rerank_model_on_disk(models_file: Path) -> None:
    (models_file.parent / "ranker.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    absent = RERANK_TOML.replace('id = "ranker"', 'id = "absent"').replace(
        'path = "ranker.gguf"', 'path = "absent.gguf"'
    )
    absent = absent[: absent.index('[[models]]\nid = "embedder"')]
    models_file.write_text(models_file.read_text() + absent + RERANK_TOML, encoding="utf-8")
    with client(models_file) as (c, factory):
        r = c.post("/rerank", json={"query": QUERY, "texts": DOCS})
        assert r.status_code == 200, r.text
        assert factory.opened[-1][0] == "ranker"
        r = c.post("/rerank", json={"model": "absent", "query": QUERY, "texts": DOCS})
        llama_error(r, 503, "absent", "missing")  # a file entry whose file is gone


def test_open_webui_request_and_reading(http: tuple[TestClient[Any], RerankFactory]) -> None:
    # Open WebUI's external reranker: model, query, documents, top_n = len(documents);
    # it sorts results by index and reads relevance_score.
    c, _ = http
    data = {"model": "ranker", "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    r = c.post("/v1/rerank", json=data, headers={"Authorization": "Bearer x"})
    assert r.status_code == 200, r.text
    by_index = sorted(r.json()["results"], key=lambda x: x["index"])
    assert [x["index"] for x in by_index] == list(range(len(DOCS)))
    assert all(isinstance(x["relevance_score"], float) for x in by_index)


def test_tei_shape_texts_in_a_bare_list_out(http: tuple[TestClient[Any], RerankFactory]) -> None:
    # Continue's huggingface-tei reranker: texts, return_text, raw_scores, no model; it
    # sorts the list by index and reads score.
    c, _ = http
    data = {"query": QUERY, "texts": DOCS, "return_text": False, "raw_scores": False}
    r = c.post("/rerank", json=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list)
    assert [x["index"] for x in body] == expected_order(QUERY, DOCS)
    assert all(set(x) == {"index", "score"} for x in body)
    r = c.post("/rerank", json={**data, "return_text": True, "top_n": 1})
    [best] = r.json()
    assert best["text"] == DOCS[best["index"]] and best["index"] == expected_order(QUERY, DOCS)[0]
    # documents win over texts: the Jina answer.
    r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:1], "texts": DOCS})
    assert len(r.json()["results"]) == 1


def test_a_long_document_is_cut_to_fit(
    http: tuple[TestClient[Any], RerankFactory], caplog: pytest.LogCaptureFixture
) -> None:
    c, factory = http
    caplog.set_level("INFO", logger="locallab_cpp")
    long_doc = " ".join(f"w{i}" for i in range(500))  # the fake's context is 64 tokens
    r = c.post(
        "/v1/rerank", json={"model": "ranker", "query": QUERY, "documents": [long_doc, "cat"]}
    )
    assert r.status_code == 200, r.text
    [call] = factory.rerankers[-1].embed_calls
    n_ctx = factory.rerankers[-1].info.n_ctx
    assert n_ctx - 16 <= len(call[0]) <= n_ctx  # cut close to the context, not to nothing
    assert len(call[1]) == 7
    assert "rerank: 1 of 2 documents cut to fit the 64-token context" in caplog.text


def test_pair_tokens_cut_reports_it_and_a_huge_query_is_refused(rerank_file: Path) -> None:
    spec = ModelSpec(id="r", name="r", description="r", path="r.gguf", kind="rerank")
    engine = FakeReranker(spec)

    async def in_thread(query: str, document: str, limit: int) -> tuple[list[int], bool]:
        return await asyncio.to_thread(serving_rerank.pair_tokens, engine, query, document, limit)

    tokens, cut = asyncio.run(in_thread("a b", "c d", 64))
    assert (len(tokens), cut) == (6, False)
    tokens, cut = asyncio.run(in_thread("a b", "x " * 10_000, 64))
    assert cut and 40 <= len(tokens) <= 64
    with pytest.raises(PayloadTooLarge, match="Shorten the query"):
        asyncio.run(in_thread("q " * 100, "d", 64))
    # Longer than any 64 tokens of at most 32 bytes: refused before tokenizing.
    engine.rerank_tokens = None  # type: ignore[method-assign,assignment]
    with pytest.raises(PayloadTooLarge, match="at least 65 tokens"):
        asyncio.run(in_thread("x" * (64 * 32 + 1), "d", 64))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "ranker", "query": QUERY, "documents": []}, "at least one document"),
        ({"model": "ranker", "query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
        ({"model": "ranker", "query": QUERY, "documents": DOCS, "top_n": -3}, "top_n"),
        ({"model": "ranker", "query": QUERY}, "documents"),
        ({"model": "ranker", "documents": DOCS}, "query"),
        ({"model": "ranker", "query": QUERY, "documents": [{"title": "no text"}]}, "text"),
        ({"model": "ranker", "query": QUERY, "documents": [3]}, "documents"),
    ],
)
def test_bad_requests_are_400s(
    http: tuple[TestClient[Any], RerankFactory], body: dict[str, Any], needle: str
) -> None:
    c, factory = http
    r = c.post("/v1/rerank", json=body)
    llama_error(r, 400, needle)
    assert factory.rerankers == []  # refused before the rerank model was loaded


def test_too_many_documents(http: tuple[TestClient[Any], RerankFactory]) -> None:
    c, _ = http
    data = {
        "model": "ranker",
        "query": QUERY,
        "documents": ["x"] * (serving_rerank.MAX_DOCUMENTS + 1),
    }
    r = c.post("/v1/rerank", json=data)
    llama_error(r, 400, "documents")


def test_a_chat_model_or_an_embedding_model_is_refused(
    http: tuple[TestClient[Any], RerankFactory],
) -> None:
    c, factory = http
    r = c.post("/v1/rerank", json={"model": "alpha", "query": QUERY, "documents": DOCS})
    llama_error(r, 400, "'alpha' is not a rerank model", "chat", "rerank models: ranker")
    r = c.post("/v1/rerank", json={"model": "embedder", "query": QUERY, "documents": DOCS})
    llama_error(r, 400, "'embedder' is not a rerank model", "embedding")
    assert "embedder" not in [model_id for model_id, _ in factory.opened]


def test_an_unknown_model_is_a_404(http: tuple[TestClient[Any], RerankFactory]) -> None:
    c, _ = http
    r = c.post("/v1/rerank", json={"model": "no-such-ranker", "query": QUERY, "documents": DOCS})
    llama_error(r, 404, "no-such-ranker")
    assert r.json()["error"]["type"] == "not_found_error"


def test_no_rerank_model_in_the_registry(models_file: Path) -> None:
    with client(models_file) as (c, _):
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        llama_error(r, 400, 'kind = "rerank"')


def test_unknown_route_under_rerank_is_llama_servers_404(
    http: tuple[TestClient[Any], RerankFactory],
) -> None:
    c, _ = http
    r = c.post("/v1/rerank/extra", json={})
    llama_error(r, 404)


def test_serving_rerank_refuses_a_non_rank_engine() -> None:
    spec = ModelSpec(
        id="r", name="r", description="r", path="r.gguf", kind="rerank", pooling="mean"
    )
    engine = FakeReranker(spec)

    class Source:
        def __init__(self) -> None:
            self.registry = _Registry([spec])

        def resolve(self, name: str | None) -> str | None:
            return name if name == "r" else None

        async def embedder_for(self, model_id: str | None, kind: str = "embedding") -> Any:
            return engine

    with pytest.raises(InvalidRequest, match="mean pooling"):
        asyncio.run(serving_rerank.reranker_for(Source(), "r"))  # type: ignore[arg-type]


class _Registry:
    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = {s.id: s for s in specs}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def get(self, model_id: str) -> ModelSpec:
        return self._specs[model_id]


def test_ties_keep_request_order_and_nan_goes_last() -> None:
    spec = ModelSpec(id="r", name="r", description="r", path="r.gguf", kind="rerank")

    class Fixed(FakeReranker):
        async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
            return [[s] for s in (1.0, math.nan, 1.0, 3.0, -2.0)][: len(inputs)]

    result = asyncio.run(serving_rerank.rerank(Fixed(spec), "q", ["a", "b", "c", "d", "e"]))
    assert [r.index for r in result.ranked] == [3, 0, 2, 4, 1]
    top = asyncio.run(serving_rerank.rerank(Fixed(spec), "q", ["a", "b", "c", "d", "e"], top_n=2))
    assert [r.index for r in top.ranked] == [3, 0]
