"""What the embedding APIs share (OpenAI's /v1/embeddings, Ollama's /api/embed and
/api/embeddings): the model a request means, tokenizing its texts off the event loop,
cutting them to the context or refusing them, L2 normalization and the token count.

An embedding request may name a chat model by mistake, or a name this server does not
know (OpenAI clients send "text-embedding-3-small"): a known chat model is a 400 that names
embedding models to use instead; no name or an unknown one means the resident embedding
model, else the registry's first embedding model (on disk first).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from locallab_cpp.engine.base import EmbeddingEngine
from locallab_cpp.errors import ContextLengthExceeded, InvalidRequest, printable
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec

EMBEDDING_KIND = "embedding"
OFFLOOP_TOKENIZE_CHARS = 4_096
"""Texts at least this long (all of a request's together) are tokenized in a worker thread."""


def embedding_models(models: ModelManager) -> list[ModelSpec]:
    """The registry's embedding models, in its order."""
    return [spec for spec in models.registry if spec.kind == EMBEDDING_KIND]


def _examples(models: ModelManager) -> str:
    # Models that need no download first (a package's or a local file), then the hub's.
    specs = sorted(embedding_models(models), key=lambda spec: spec.source == "hub")
    names = [spec.id for spec in specs][:3]
    if not names:
        return (
            "this server's registry has no embedding model: add one with "
            'kind = "embedding" to models.toml'
        )
    return "use an embedding model such as " + ", ".join(f"'{n}'" for n in names)


def check_embedding_model(models: ModelManager, model_id: str) -> ModelSpec:
    """The spec of ``model_id``; InvalidRequest unless it is an embedding model."""
    spec = models.registry.get(model_id)
    if spec.kind == EMBEDDING_KIND:
        return spec
    what = "a rerank model (POST /v1/rerank scores documents with it)"
    if spec.kind == "chat":
        what = "a chat model"
    raise InvalidRequest(
        f"Invalid request: 'model': model '{printable(model_id)}' is {what}; embeddings "
        f"need an embedding model: {_examples(models)}."
    )


async def default_embedding_model(models: ModelManager) -> str:
    """The most recently used resident embedding model, else the registry's first on
    disk, else its first; InvalidRequest when the registry has none."""
    for engine in reversed(models.residents()):
        model_id = engine.info.model_id
        if model_id in models.registry and models.registry.get(model_id).kind == EMBEDDING_KIND:
            return model_id
    specs = embedding_models(models)
    if not specs:
        raise InvalidRequest(f"Invalid request: 'model': {_examples(models)}.")
    for spec in specs:
        if await asyncio.to_thread(models.registry.local_path, spec) is not None:
            return spec.id
    return specs[0].id


async def embedder_for(models: ModelManager, name: str | None) -> tuple[str, EmbeddingEngine]:
    """The registry id and engine of the embedding model a request's ``model`` means (see
    the module docstring); loads it when it is not resident."""
    model_id = models.resolve(name) if name else None
    if model_id is None:
        model_id = await default_embedding_model(models)
    check_embedding_model(models, model_id)
    return model_id, await models.embedder_for(model_id)


@dataclass(frozen=True, slots=True)
class Embedded:
    """The vectors of a request's inputs, in input order, and the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int


def _trailer(engine: EmbeddingEngine) -> list[int]:
    """The tokens the tokenizer adds at the end of every text (BERT's [SEP]); a cut input
    keeps them, as the model was trained to see them."""
    empty = engine.tokenize("", add_bos=True, special=False)
    head = engine.tokenize("", add_bos=False, special=False)
    return empty[1:] if len(empty) > len(head) + 1 else []


def _cut_text(text: str, n_ctx: int, max_token_bytes: int) -> str:
    """A prefix of ``text`` that still holds at least ``n_ctx`` tokens when the whole does:
    tokenizing megabytes only to keep a context's worth would take long."""
    if max_token_bytes <= 0:
        return text
    keep = n_ctx * max_token_bytes
    return text if len(text) <= keep else text[:keep]  # characters: at least that many bytes


def _tokens_of(engine: EmbeddingEngine, texts: Sequence[str], truncate: bool) -> list[list[int]]:
    n_ctx = engine.info.n_ctx
    limit = engine.info.max_token_bytes
    out: list[list[int]] = []
    trailer: list[int] | None = None
    for index, text in enumerate(texts):
        if not text:
            raise InvalidRequest(f"Invalid request: input {index} is empty; send some text.")
        if truncate:
            text = _cut_text(text, n_ctx, limit)
        else:
            _check_text(index, text, limit, n_ctx)
        tokens = engine.tokenize(text, add_bos=True, special=False)
        if len(tokens) > n_ctx:
            if not truncate:
                raise too_long(index, len(tokens), n_ctx)
            if trailer is None:
                trailer = _trailer(engine)
            kept = n_ctx - len(trailer)
            tail = trailer if tokens[-len(trailer) :] == trailer and trailer else []
            tokens = tokens[: kept if tail else n_ctx] + tail
        out.append(tokens)
    return out


def _check_text(index: int, text: str, max_token_bytes: int, n_ctx: int) -> None:
    if max_token_bytes <= 0:
        return
    at_least = -(-len(text.encode("utf-8")) // max_token_bytes)
    if at_least > n_ctx:
        raise too_long(index, at_least, n_ctx, at_least=True)


def too_long(
    index: int, tokens: int, n_ctx: int, *, at_least: bool = False
) -> ContextLengthExceeded:
    """The 400 for an input longer than the model's context, with what to do."""
    size = f"at least {tokens}" if at_least else str(tokens)
    return ContextLengthExceeded(
        f"Input {index} is {size} tokens; this embedding model takes at most {n_ctx} "
        "tokens an input. Shorten or split it, or let the server cut it to the context "
        "(Ollama's truncate: true)."
    )


async def tokenize_inputs(
    engine: EmbeddingEngine, texts: Sequence[str], *, truncate: bool
) -> list[list[int]]:
    """The token lists of ``texts`` (plain text: control-token texts are not parsed), each
    cut to the context when ``truncate``, else refused when longer (ContextLengthExceeded);
    an empty text is InvalidRequest. Long texts are tokenized in a worker thread."""
    if sum(len(t) for t in texts) >= OFFLOOP_TOKENIZE_CHARS:
        return await asyncio.to_thread(_tokens_of, engine, texts, truncate)
    return _tokens_of(engine, texts, truncate)


def check_token_inputs(
    engine: EmbeddingEngine, inputs: Sequence[Sequence[int]], *, truncate: bool
) -> list[list[int]]:
    """Token-id inputs as the client sent them: cut to the context when ``truncate``,
    else refused when longer; empty ones are InvalidRequest."""
    n_ctx = engine.info.n_ctx
    out = []
    for index, tokens in enumerate(inputs):
        if not tokens:
            raise InvalidRequest(f"Invalid request: input {index} is empty; send some tokens.")
        if len(tokens) > n_ctx:
            if not truncate:
                raise too_long(index, len(tokens), n_ctx)
            tokens = tokens[:n_ctx]
        out.append(list(tokens))
    return out


async def embed_tokens(engine: EmbeddingEngine, inputs: list[list[int]]) -> Embedded:
    """The engine's pooled vectors of ``inputs`` (not normalized) and their token count."""
    vectors = await engine.embed(inputs)
    return Embedded(vectors=vectors, prompt_tokens=sum(len(t) for t in inputs))


def normalized(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit length (L2), as OpenAI's and Ollama's /api/embed vectors
    are; an all-zero vector stays zero."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0 or not math.isfinite(norm):
        return [float(x) for x in vector]
    return [x / norm for x in vector]
