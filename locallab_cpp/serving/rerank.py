"""What every rerank API does: find the rerank model, score each document against the
query, sort.

A rerank model (registry ``kind = "rerank"``, rank pooling) reads one sequence per
(query, document) pair, laid out by :meth:`EmbeddingEngine.rerank_tokens`, and gives a
score per pair: the first value of its classification head's output. Every pair of a
request goes to the engine in one :meth:`EmbeddingEngine.embed` call, so they are decoded
together (with other requests' inputs) rather than one by one.

A document too long for the context is cut, not refused: a search pipeline sends chunks
of whatever length its splitter made, and one long chunk must not fail the others. The
document's text is shortened from its end (the query and the template's tokens around the
document stay whole, which models that score at the last token need) until the pair fits;
:attr:`RerankResult.truncated` lists the documents that were cut. A query that leaves no
room for any document is a :class:`~locallab_cpp.errors.ContextLengthExceeded`.

Scores are the model's raw output: a logit for BERT-style rerankers (bge-reranker, where
a sigmoid gives a probability), a probability for Qwen3-Reranker (llama.cpp applies a
softmax to its head). Only their order means something across models.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from locallab_cpp.engine.base import EmbeddingEngine
from locallab_cpp.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, printable
from locallab_cpp.models.registry import ModelKind, Registry

logger = logging.getLogger("locallab_cpp")

MAX_DOCUMENTS = 1000
"""Documents one request may rank (Cohere's limit; Open WebUI and Continue send tens)."""

_MAX_CUTS = 8
"""Rounds of shortening a document before it is dropped to nothing: each round cuts by
the measured tokens-per-character ratio with a margin, so two or three suffice."""

_CUT_MARGIN = 0.9
"""Keep a little less than the ratio says: a cut can land inside a word that then
tokenizes into more pieces."""


class ModelSource(Protocol):
    """What rerank needs of the model manager (models.manager.ModelManager)."""

    registry: Registry

    def resolve(self, name: str | None) -> str | None: ...

    async def embedder_for(
        self, model_id: str | None, kind: ModelKind = "embedding"
    ) -> EmbeddingEngine: ...


@dataclass(frozen=True, slots=True)
class Ranked:
    """One document's place in the answer."""

    index: int
    """Its position in the request's ``documents``."""
    score: float


@dataclass(frozen=True, slots=True)
class RerankResult:
    """The documents sorted by score, highest first, cut to ``top_n``."""

    ranked: list[Ranked]
    prompt_tokens: int
    """Tokens of all pairs the model read (each pair holds the query once)."""
    truncated: tuple[int, ...] = ()
    """Indices of the documents shortened to fit the context."""


def rerank_models(models: ModelSource) -> list[str]:
    """Registry ids of the rerank models, in registry order."""
    return [spec.id for spec in models.registry if spec.kind == "rerank"]


async def reranker_for(models: ModelSource, name: str | None) -> tuple[str, EmbeddingEngine]:
    """The registry id and engine of the rerank model ``name`` means, loaded if it is not
    resident. No name (Text Embeddings Inference's clients send none) means the
    registry's first rerank model whose file is on disk, else its first rerank model
    (whose load then says how to pull it).

    Raises ModelNotFound for a name the registry does not know and InvalidRequest for a
    model that is not a reranker (a chat or embedding model) or when the registry has none.
    """
    rerankers = rerank_models(models)
    listed = ", ".join(rerankers) if rerankers else "none in the registry"
    if name:
        model_id = models.resolve(name)
        if model_id is None:
            raise ModelNotFound(name)
    elif rerankers:
        model_id = await asyncio.to_thread(_first_on_disk, models.registry, rerankers)
    else:
        raise InvalidRequest(
            'No rerank model is configured: add a kind = "rerank" entry to models.toml '
            "(bge-reranker-v2-m3 or Qwen3-Reranker) and name it in `model`."
        )
    spec = models.registry.get(model_id)
    if spec.kind != "rerank":
        raise InvalidRequest(
            f"Model '{printable(model_id)}' is not a rerank model (it is a {spec.kind} "
            f"model); rerank models: {listed}."
        )
    engine = await models.embedder_for(model_id, "rerank")
    if engine.pooling != "rank":
        raise InvalidRequest(
            f"Model '{printable(model_id)}' is loaded with {engine.pooling} pooling, not "
            'rank: set pooling = "rank" in its models.toml entry.'
        )
    return model_id, engine


def _first_on_disk(registry: Registry, model_ids: Sequence[str]) -> str:
    # Blocking (file checks, the hub cache's lookup): called in a worker thread.
    for model_id in model_ids:
        if registry.local_path(registry.get(model_id)) is not None:
            return model_id
    return model_ids[0]


def pair_tokens(
    engine: EmbeddingEngine, query: str, document: str, limit: int
) -> tuple[list[int], bool]:
    """The pair's tokens, at most ``limit`` of them, and whether the document was cut to
    fit. Blocking (tokenizes): call it from a worker thread."""
    cut = False
    per_token = engine.info.max_token_bytes
    # A query that cannot fit whatever its tokens is refused before it is tokenized (once
    # per document: megabytes of it would take minutes).
    ContextLengthExceeded.check_text(len(query.encode()), per_token, limit)
    if per_token > 0 and len(document) > limit * per_token:
        # More characters than any tokenization of ``limit`` tokens can cover (a character
        # is at least a byte): drop them before tokenizing megabytes.
        document, cut = document[: limit * per_token], True
    tokens = engine.rerank_tokens(query, document)
    if len(tokens) <= limit:
        return tokens, cut
    frame = len(engine.rerank_tokens(query, ""))
    if frame >= limit:
        raise ContextLengthExceeded(
            f"The query with the model's rerank layout is {frame} tokens; this model's "
            f"context holds {limit} per document. Shorten the query."
        )
    for _ in range(_MAX_CUTS):
        doc_tokens = max(len(tokens) - frame, 1)
        keep = (doc_tokens - (len(tokens) - limit)) / doc_tokens
        document = document[: max(int(len(document) * keep * _CUT_MARGIN), 0)]
        tokens = engine.rerank_tokens(query, document)
        if len(tokens) <= limit:
            return tokens, True
    return engine.rerank_tokens(query, ""), True


def _all_pairs(
    engine: EmbeddingEngine, query: str, documents: Sequence[str]
) -> tuple[list[list[int]], tuple[int, ...]]:
    limit = engine.info.n_ctx
    pairs: list[list[int]] = []
    truncated: list[int] = []
    for i, document in enumerate(documents):
        tokens, cut = pair_tokens(engine, query, document, limit)
        pairs.append(tokens)
        if cut:
            truncated.append(i)
    return pairs, tuple(truncated)


def _order(item: Ranked) -> tuple[float, int]:
    # Highest score first, ties in request order; a NaN (a broken model) goes last.
    return (math.inf if math.isnan(item.score) else -item.score, item.index)


def check_request(documents: Sequence[str], top_n: int | None) -> None:
    """Raise InvalidRequest for no documents, too many, or a ``top_n`` below 1: an API
    calls it before :func:`reranker_for`, so a bad request loads no model."""
    if not documents:
        raise InvalidRequest("`documents` must hold at least one document.")
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequest(
            f"`documents` holds {len(documents)} documents; at most {MAX_DOCUMENTS} per request."
        )
    if top_n is not None and top_n < 1:
        raise InvalidRequest(f"`top_n` must be at least 1 (got {top_n}).")


async def rerank(
    engine: EmbeddingEngine,
    query: str,
    documents: Sequence[str],
    *,
    top_n: int | None = None,
) -> RerankResult:
    """Score ``documents`` against ``query`` with a rank-pooling engine and sort them,
    keeping the best ``top_n`` (None: all; more than there are: all)."""
    check_request(documents, top_n)
    # Tokenizing is llama.cpp work in proportion to the text: off the event loop.
    pairs, truncated = await asyncio.to_thread(_all_pairs, engine, query, documents)
    if truncated:
        logger.info(
            "rerank: %d of %d documents cut to fit the %d-token context",
            len(truncated),
            len(documents),
            engine.info.n_ctx,
        )
    outputs = await engine.embed(pairs)
    ranked = sorted(
        (Ranked(index=i, score=float(out[0])) for i, out in enumerate(outputs)), key=_order
    )
    if top_n is not None:
        ranked = ranked[:top_n]
    return RerankResult(
        ranked=ranked, prompt_tokens=sum(len(p) for p in pairs), truncated=truncated
    )
