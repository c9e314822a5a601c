"""POST /api/embed and the older POST /api/embeddings: Ollama's embeddings over
serving/embeddings.py.

As Ollama does: /api/embed returns unit-length (L2-normalized) vectors and cuts an input
longer than the context unless ``truncate: false`` (then a 400); ``dimensions`` keeps the
first that many numbers of each vector and normalizes them again (Matryoshka models are
trained for it; others just lose accuracy). The older /api/embeddings returns the model's
vector as it is, not normalized, and an empty ``prompt`` only loads the model. Model names
are Ollama's (``id:latest``): an unknown one is a 404, a chat model a 400. ``keep_alive``
sets how long the model stays loaded once idle; ``options`` are accepted and ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler
from msgspec import Meta

from locallab_cpp.api.ollama.chat_protocol import JsonObject, KeepAlive, ModelName
from locallab_cpp.api.ollama.keepalive import parse_keep_alive
from locallab_cpp.api.ollama.names import model_of
from locallab_cpp.engine.base import EmbeddingEngine
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import embeddings as serving

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 1_000_000
Text = Annotated[str, Meta(max_length=MAX_INPUT_CHARS)]


class _Lenient(msgspec.Struct, kw_only=True):
    """Unknown fields are ignored (msgspec's default for a Struct)."""


class EmbedBody(_Lenient):
    """POST /api/embed."""

    model: ModelName
    input: Text | Annotated[list[Text], Meta(max_length=MAX_INPUTS)] | None = None
    truncate: bool | None = None
    """Cut inputs longer than the context (default true); false: a 400 instead."""
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    options: JsonObject | None = None
    keep_alive: KeepAlive | None = None


class EmbedResponse(_Lenient):
    """/api/embed's answer (durations in nanoseconds)."""

    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsBody(_Lenient):
    """POST /api/embeddings (the older endpoint): one ``prompt``."""

    model: ModelName
    prompt: Text | None = None
    options: JsonObject | None = None
    keep_alive: KeepAlive | None = None


class EmbeddingsResponse(_Lenient):
    """/api/embeddings' answer: the vector, not normalized."""

    embedding: list[float]


_EMBED_DOC = (
    "Ollama's embeddings: `input` a string or strings; unit-length vectors. `truncate` "
    "(default true) cuts inputs to the context, false answers 400 instead; `dimensions` "
    "keeps the first numbers and normalizes again."
)
_EMBEDDINGS_DOC = (
    "Ollama's older embeddings endpoint: one `prompt`, the model's vector not normalized; "
    "an empty prompt loads the model."
)


async def _engine(
    models: ModelManager, name: str, keep_alive: float | str | None
) -> tuple[str, EmbeddingEngine, int]:
    """The model's id and engine and the nanoseconds a load took (0 when resident)."""
    model_id = model_of(models, name, on_disk=not models.settings.pull_on_demand)
    serving.check_embedding_model(models, model_id)
    keep = None if keep_alive is None else (parse_keep_alive(keep_alive),)  # 400s first
    resident = models.resident(model_id) is not None
    started = time.perf_counter_ns()
    _, engine = await serving.embedder_for(models, model_id)
    load_ns = 0 if resident else time.perf_counter_ns() - started
    if keep is not None:
        models.keep_alive(model_id, keep[0])
    return model_id, engine, load_ns


def _shortened(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is None or dimensions == len(vector):
        return vector
    if dimensions > len(vector):
        raise InvalidRequest(
            f"Invalid request: 'dimensions': this model's vectors have {len(vector)} "
            f"numbers; ask for {len(vector)} or fewer."
        )
    return serving.normalized(vector[:dimensions])


class OllamaEmbedController(Controller):
    """POST /api/embed and /api/embeddings."""

    tags = ["Ollama"]

    @post("/embed", status_code=200, summary="Embeddings (Ollama)", description=_EMBED_DOC)
    async def embed(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmbedBody],
        models: NamedDependency[ModelManager],
    ) -> EmbedResponse:
        """One unit-length vector per input."""
        started = time.perf_counter_ns()
        texts = [data.input] if isinstance(data.input, str) else list(data.input or [])
        _, engine, load_ns = await _engine(models, data.model, data.keep_alive)
        vectors: list[list[float]] = []
        count = 0
        if texts:  # none: the request only loads the model, as Ollama's clients do
            truncate = data.truncate is not False
            inputs = await serving.tokenize_inputs(engine, texts, truncate=truncate)
            done = await unless_disconnected(request, serving.embed_tokens(engine, inputs))
            vectors = [_shortened(serving.normalized(v), data.dimensions) for v in done.vectors]
            count = done.prompt_tokens
        return EmbedResponse(
            model=data.model,
            embeddings=vectors,
            total_duration=time.perf_counter_ns() - started,
            load_duration=load_ns,
            prompt_eval_count=count,
        )

    @post(
        "/embeddings",
        status_code=200,
        summary="Embedding, older endpoint (Ollama)",
        description=_EMBEDDINGS_DOC,
    )
    async def embeddings(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmbeddingsBody],
        models: NamedDependency[ModelManager],
    ) -> EmbeddingsResponse:
        """The prompt's vector as the model gives it."""
        _, engine, _ = await _engine(models, data.model, data.keep_alive)
        if not data.prompt:
            return EmbeddingsResponse(embedding=[])
        inputs = await serving.tokenize_inputs(engine, [data.prompt], truncate=True)
        done = await unless_disconnected(request, serving.embed_tokens(engine, inputs))
        return EmbeddingsResponse(embedding=done.vectors[0])


EMBED_ROUTES: tuple[ControllerRouterHandler, ...] = (OllamaEmbedController,)
"""The embedding routes."""
