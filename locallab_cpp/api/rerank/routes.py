"""POST /v1/rerank, /rerank, /v1/reranking and /reranking: one handler under each path
llama-server answers on, so a client set up with any of them (Open WebUI's external
reranker URL, Continue's ``apiBase`` + ``rerank``) finds it. Each path is an
:class:`~locallab_cpp.api.Api` of its own prefix, so its errors are llama-server's
(errors.py) and not those of the OpenAI API that owns the rest of /v1."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api import Api
from locallab_cpp.api.rerank.errors import RERANK_ERRORS
from locallab_cpp.api.rerank.protocol import (
    RerankRequest,
    RerankResponse,
    RerankResultBody,
    RerankUsage,
    ResultDocument,
    TeiResult,
)
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import rerank

_DOC = (
    "Rank `documents` (strings or {text} objects) by relevance to `query` with a rerank "
    'model (models.toml `kind = "rerank"`: bge-reranker-v2-m3, Qwen3-Reranker). Results '
    "come sorted by `relevance_score`, highest first, each with its `index` in the "
    "request; `top_n` keeps the best n and `return_documents` adds each text. Scores are "
    "the model's raw output (a logit for bge-reranker, a probability for Qwen3-Reranker). "
    "A document too long for the context is shortened from its end, not refused. With "
    "`texts` instead of `documents` (Text Embeddings Inference's shape, as llama-server "
    "accepts it) the answer is TEI's list of {index, score, text?}."
)


class RerankController(Controller):
    """POST under each rerank path."""

    tags = ["Rerank"]

    @post("/", status_code=200, summary="Rerank documents (Jina / Cohere shape)", description=_DOC)
    async def rerank(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RerankRequest],
        models: NamedDependency[ModelManager],
    ) -> RerankResponse | list[TeiResult]:
        """Score each document against the query and sort them."""
        texts = data.document_texts()
        rerank.check_request(texts, data.top_n)  # before any model is loaded for it
        model_id, engine = await rerank.reranker_for(models, data.model)
        result = await unless_disconnected(
            request, rerank.rerank(engine, data.query, texts, top_n=data.top_n)
        )
        if data.tei:
            return [
                TeiResult(
                    index=item.index,
                    score=item.score,
                    text=texts[item.index] if data.return_text else None,
                )
                for item in result.ranked
            ]
        return RerankResponse(
            model=data.model or model_id,
            results=[
                RerankResultBody(
                    index=item.index,
                    relevance_score=item.score,
                    document=ResultDocument(texts[item.index]) if data.return_documents else None,
                )
                for item in result.ranked
            ],
            usage=RerankUsage(
                prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens
            ),
        )


RERANK_PATHS = ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking")
"""Where llama-server answers rerank requests (tools/server/server.cpp), and so do we."""

RERANK_APIS: tuple[Api, ...] = tuple(
    Api(name="rerank", prefix=path, routes=(RerankController,), errors=RERANK_ERRORS)
    for path in RERANK_PATHS
)
"""The rerank endpoints, with llama-server's error bodies."""
