"""The Ollama API: every route under /api, with Ollama's error bodies on all of them
(an unknown /api path or a wrong method included)."""

from __future__ import annotations

from locallab_cpp.api import Api
from locallab_cpp.api.ollama.chat_routes import CHAT_ROUTES
from locallab_cpp.api.ollama.embed_routes import EMBED_ROUTES
from locallab_cpp.api.ollama.errors import OLLAMA_ERRORS
from locallab_cpp.api.ollama.model_routes import MODEL_ROUTES

OLLAMA_API = Api(
    name="ollama",
    prefix="/api",
    routes=(*CHAT_ROUTES, *EMBED_ROUTES, *MODEL_ROUTES),
    errors=OLLAMA_ERRORS,
)
"""/api/chat, /api/generate, /api/embed, /api/embeddings, /api/tags, /api/show, /api/pull..."""
