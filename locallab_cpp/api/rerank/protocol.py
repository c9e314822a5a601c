"""The rerank request and answer, as Jina's and Cohere's clients, Open WebUI's external
reranker and Continue's llama.cpp provider send and read them.

Request: ``model``, ``query``, ``documents`` (strings, or ``{"text": ...}`` objects as
Cohere's v1 and Jina's clients may send), ``top_n``, ``return_documents``. Unknown
fields are ignored and optional ones take null. Answer: ``{"model", "object": "list",
"results": [{"index", "relevance_score", "document"?: {"text"}}], "usage":
{"prompt_tokens", "total_tokens"}}``, the results sorted by score, highest first.
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
    documents: Annotated[list[Text | DocumentBody], Meta(max_length=MAX_DOCUMENTS)]
    """What to rank: strings or ``{"text"}`` objects, mixed as the client likes."""
    model: Annotated[str, Meta(max_length=300)] | None = None
    """A registry id of a ``kind = "rerank"`` model; absent: the registry's first one."""
    top_n: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    """Keep the best ``top_n`` (absent: all; more than there are documents: all)."""
    return_documents: bool | None = None
    """Put each document's text in its result (absent: false, as llama-server and
    Cohere's v2; Jina's own API defaults to true)."""

    def texts(self) -> list[str]:
        """The documents as plain strings, in request order."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


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
