"""The rerank request and answer, as Jina's and Cohere's clients, Open WebUI's external
reranker and Continue's llama.cpp provider send and read them.

Request: ``model``, ``query``, ``documents`` (strings, or ``{"text": ...}`` objects as
Cohere's v1 and Jina's clients may send), ``top_n``, ``return_documents``. Unknown
fields are ignored and optional ones take null. Answer: ``{"model", "object": "list",
"results": [{"index", "relevance_score", "document"?: {"text"}}], "usage":
{"prompt_tokens", "total_tokens"}}``, the results sorted by score, highest first.

As llama-server does, a request with ``texts`` instead of ``documents`` is Hugging Face
Text Embeddings Inference's shape (``return_text``; ``raw_scores`` and ``truncate``
ignored), answered as TEI's bare list ``[{"index", "score", "text"?}]``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from locallab_cpp.serving.rerank import MAX_DOCUMENTS

MAX_TEXT = 16_000_000
"""Characters of the query or of one document (the body limit bounds the total)."""

Text = Annotated[str, Meta(max_length=MAX_TEXT)]


class _Lenient(msgspec.Struct, kw_only=True):
    """Unknown fields are ignored (msgspec's default for a Struct)."""


class DocumentBody(_Lenient):
    """A document as an object: its ``text`` (other fields, a title or an id, ignored)."""

    text: Text


class RerankRequest(_Lenient):
    """POST /v1/rerank."""

    query: Text
    documents: Annotated[list[Text | DocumentBody], Meta(max_length=MAX_DOCUMENTS)] | None = None
    """What to rank: strings or ``{"text"}`` objects, mixed as the client likes."""
    texts: Annotated[list[Text], Meta(max_length=MAX_DOCUMENTS)] | None = None
    """Text Embeddings Inference's name for the documents (Continue's ``huggingface-tei``
    reranker sends it): with it the answer is TEI's bare list (:class:`TeiResult`), as
    llama-server answers it."""
    return_text: bool | None = None
    """TEI's ``return_documents``: each result gets its ``text``."""
    model: Annotated[str, Meta(max_length=300)] | None = None
    """A registry id of a ``kind = "rerank"`` model; absent: the first one on disk."""
    top_n: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    """Keep the best ``top_n`` (absent: all; more than there are documents: all)."""
    return_documents: bool | None = None
    """Put each document's text in its result (absent: false, as llama-server and
    Cohere's v2; Jina's own API defaults to true)."""

    @property
    def tei(self) -> bool:
        """Whether the request is in TEI's shape (``texts``, no ``documents``)."""
        return self.documents is None and self.texts is not None

    def document_texts(self) -> list[str]:
        """The documents as plain strings, in request order."""
        if self.documents is not None:
            return [d if isinstance(d, str) else d.text for d in self.documents]
        return list(self.texts or ())


class TeiResult(msgspec.Struct, omit_defaults=True):
    """One ranked document in Text Embeddings Inference's answer (a bare list)."""

    index: int
    score: float
    text: str | None = None


class ResultDocument(msgspec.Struct):
    """A result's document, when ``return_documents`` asks for it."""

    text: str


class RerankResultBody(msgspec.Struct, omit_defaults=True):
    """One ranked document."""

    index: int
    """Its position in the request's ``documents``."""
    relevance_score: float
    document: ResultDocument | None = None


class RerankUsage(msgspec.Struct):
    """Tokens the model read: every (query, document) pair, each holding the query."""

    prompt_tokens: int
    total_tokens: int


class RerankResponse(msgspec.Struct):
    """The answer of POST /v1/rerank."""

    model: str
    results: list[RerankResultBody]
    usage: RerankUsage
    object: str = "list"
