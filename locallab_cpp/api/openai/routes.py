"""The OpenAI-compatible API as the app mounts it: its routes under /v1, OpenAI's errors."""

from __future__ import annotations

from locallab_cpp.api import Api
from locallab_cpp.api.openai.chat import ChatController
from locallab_cpp.api.openai.completions import CompletionsController
from locallab_cpp.api.openai.embeddings import EmbeddingsController
from locallab_cpp.api.openai.errors import OPENAI_ERRORS
from locallab_cpp.api.openai.models import ModelsController

OPENAI_API = Api(
    name="openai",
    prefix="/v1",
    routes=(ChatController, CompletionsController, EmbeddingsController, ModelsController),
    errors=OPENAI_ERRORS,
)
"""/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models and /v1/models/{id}."""
