"""How the rerank endpoints report errors: llama-server's ``{"error": {"code", "message",
"type"}}``, the same renderer as /infill.

Why llama-server's: its /v1/rerank is the one local servers are measured against
(Continue's llama.cpp provider and Open WebUI's external reranker are set up against it),
and those clients only look at the status, so the body serves people reading it. Jina
answers ``{"detail"}`` and Cohere ``{"message"}``; no client we know of parses either.
"""

from __future__ import annotations

from locallab_cpp.api.infill.errors import InfillErrors

RERANK_ERRORS = InfillErrors()
"""The rerank paths' :class:`~locallab_cpp.http.errors.ErrorRenderer`."""
