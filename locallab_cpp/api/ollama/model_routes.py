"""Ollama's model endpoints: GET /api/version, /api/tags, /api/ps; POST /api/show,
/api/pull; DELETE /api/delete; and a 501 for what the server does not do (create, push,
copy, blobs), saying what to use instead. Embeddings are embed_routes.py's.

Models are registry entries named ``id:latest`` (names.py). Every handler that touches the
disk (hub cache look-ups, a GGUF header, a sha256 not yet known) does it in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Controller, Response, delete, get, head, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from locallab_cpp.api.ollama.model_protocol import (
    DeleteRequest,
    ProgressLine,
    PsResponse,
    PullRequest,
    RunningModel,
    ShowRequest,
    ShowResponse,
    TagModel,
    TagsResponse,
    VersionResponse,
)
from locallab_cpp.api.ollama.names import model_of, not_found, ollama_name
from locallab_cpp.api.ollama.pull import pull_lines, pull_once, registry_id
from locallab_cpp.api.ollama.show import show_response
from locallab_cpp.api.ollama.tags import (
    ModelView,
    details,
    expiry,
    listing,
    rfc3339,
    view,
    view_or_404,
)
from locallab_cpp.errors import InvalidRequest, LoadConflict, ModelUnavailable
from locallab_cpp.http.ndjson import NdjsonStream, ndjson_stream
from locallab_cpp.models.catalog import describe
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.placement import held_bytes

OLLAMA_VERSION = "0.21.1"
"""What GET /api/version reports. Clients gate features on it: VS Code Copilot's Ollama
provider refuses a server below 0.6.4 (the first with ``capabilities`` in /api/show), and
Open WebUI shows it. It is the Ollama release current when this API was written (April
2026), whose model endpoints' shapes these are; the chat and generate routes follow the
same release's docs/api.md."""


def _tag(v: ModelView) -> TagModel:
    name = ollama_name(v.spec)
    return TagModel(
        name=name,
        model=name,
        modified_at=rfc3339(v.modified),
        size=v.size,
        digest=v.digest,
        details=details(v),
    )


def _n_ctx(models: ModelManager, model_id: str) -> int:
    """Tokens one request can use: the loaded engine's slot context if it is this model,
    else what the server would give it at its settings (sizing.plan). Blocking."""
    engine = models.resident(model_id)
    if engine is not None:
        return engine.info.n_ctx
    return describe(models.registry, models.registry.get(model_id), models.settings).context_length


def _show(models: ModelManager, model_id: str, name: str, verbose: bool) -> ShowResponse:
    found = view_or_404(models.registry, model_id, name)
    if found.info is None:
        raise ModelUnavailable(
            f"The GGUF header of model '{model_id}' cannot be read ({found.error}); the file "
            "is damaged or not a GGUF. Pull it again, or fix its entry in models.toml."
        )
    return show_response(
        found, found.info, _n_ctx(models, model_id), ollama_name(found.spec), verbose=verbose
    )


def _running(models: ModelManager) -> list[RunningModel]:
    """The resident models, the most recently used first, with what each holds."""
    running = []
    for engine in reversed(models.residents()):
        info = engine.info
        found = view(models.registry, models.registry.get(info.model_id))
        if found is None:
            continue
        size = held_bytes(engine)
        layers = found.spec.layers
        if found.info is not None and not layers:
            block_count = found.info.metadata.get(f"{found.info.architecture}.block_count")
            layers = block_count if isinstance(block_count, int) else 0
        on_gpu = info.n_gpu_layers
        share = 0.0 if on_gpu <= 0 else 1.0 if not layers or on_gpu >= layers else on_gpu / layers
        running.append(
            RunningModel(
                name=ollama_name(found.spec),
                model=ollama_name(found.spec),
                size=size,
                size_vram=int(size * share),
                digest=found.digest,
                details=details(found),
                expires_at=expiry(models.expires_at(info.model_id), time.time()),
                context_length=info.n_ctx,
            )
        )
    return running


class OllamaModelsController(Controller):
    """Ollama's model listing, description and management."""

    path = "/"
    tags = ["Ollama"]

    @get("/version", summary="The Ollama API version this server speaks")
    async def version(self) -> VersionResponse:
        """``{"version": "x.y.z"}`` (see OLLAMA_VERSION for the choice)."""
        return VersionResponse(version=OLLAMA_VERSION)

    @get("/tags", summary="The registry's models on disk")
    async def list_tags(self, models: NamedDependency[ModelManager]) -> TagsResponse:
        """Each model whose GGUF is on this machine, as ``id:latest``, with its file's
        size, mtime and sha256 and ``details`` from its GGUF header."""
        views = await asyncio.to_thread(listing, models.registry)
        return TagsResponse(models=[_tag(v) for v in views])

    @post("/show", status_code=200, summary="A model's metadata, template and parameters")
    async def show(
        self, data: JSONBody[ShowRequest], models: NamedDependency[ModelManager]
    ) -> ShowResponse:
        """``model_info`` from the GGUF header (``<arch>.context_length``: what one request
        can use here), ``capabilities``, ``template``, ``parameters``, ``details``."""
        model_id = model_of(models, data.named)
        return await asyncio.to_thread(_show, models, model_id, data.named, bool(data.verbose))

    @get("/ps", summary="The loaded model")
    async def ps(self, models: NamedDependency[ModelManager]) -> PsResponse:
        """The resident model (one at a time here) with its memory, context and when its
        keep-alive unloads it (a date ~292 years away: never)."""
        return PsResponse(models=await asyncio.to_thread(_running, models))

    @post("/pull", status_code=200, summary="Download a registry model")
    async def pull(
        self, data: JSONBody[PullRequest], models: NamedDependency[ModelManager]
    ) -> NdjsonStream | ProgressLine:
        """Fetch the GGUF of a registry id (``id`` or ``id:tag``) with Ollama's NDJSON
        progress; ``stream: false``: one ``{"status": "success"}`` when it is on disk."""
        spec = models.registry.get(registry_id(models, data.named))
        if data.stream is False:
            return await pull_once(models, spec)
        return ndjson_stream(pull_lines(models, spec))

    @delete("/delete", status_code=200, summary="Delete a downloaded model's file")
    async def delete_model(
        self, data: JSONBody[DeleteRequest], models: NamedDependency[ModelManager]
    ) -> Response[bytes]:
        """Remove a hub model's GGUF from the cache (as ``models rm`` does). The loaded
        model, or one being loaded, is refused with a 409: unloading it would end other
        clients' generations; unload it first (POST /models/unload, or keep_alive 0)."""
        model_id = model_of(models, data.named)
        spec = models.registry.get(model_id)
        loading = models.loading
        if models.resident(model_id) is not None or (loading and loading.model_id == model_id):
            raise LoadConflict(
                f"Model '{model_id}' is loaded (or loading): unload it first (POST "
                "/models/unload?model_id=..., or a request with keep_alive 0), then delete it."
            )
        if spec.source != "hub":
            what = "ships in a Python package" if spec.source == "package" else "is a local file"
            raise InvalidRequest(
                f"Model '{model_id}' {what} named in the model registry, not a download: "
                "there is nothing to delete. Remove its entry from models.toml instead."
            )
        freed = await asyncio.to_thread(models.registry.remove, spec)
        if not freed:
            raise not_found(data.named)
        return Response(b"", status_code=200)


def _unsupported(what: str, instead: str) -> Response[Any]:
    body = {"error": f"{what} is not supported by this server: {instead}"}
    return Response(body, status_code=501)


_MODELS = "models are the entries of models.toml (GET /models/available)"


class OllamaUnsupportedController(Controller):
    """Ollama endpoints this server does not implement: 501 with what to use instead."""

    path = "/"
    tags = ["Ollama"]
    include_in_schema = False

    @post("/create", status_code=501)
    async def create(self) -> Response[Any]:
        """Creating models from Modelfiles."""
        return _unsupported(
            "POST /api/create",
            f"{_MODELS}; add a [[models]] entry naming a GGUF file or a Hugging Face repo instead",
        )

    @post("/push", status_code=501)
    async def push(self) -> Response[Any]:
        """Uploading to a registry."""
        return _unsupported("POST /api/push", "it serves models and never uploads them")

    @post("/copy", status_code=501)
    async def copy(self) -> Response[Any]:
        """Copying a model under a new name."""
        return _unsupported(
            "POST /api/copy", f"{_MODELS}; give a model another name with --model-alias NAME=MODEL"
        )

    @head("/blobs/{digest:str}", status_code=501)
    async def blob_exists(self, digest: FromPath[str]) -> None:
        """Blob look-ups (part of create): a HEAD answer has no body, only the 501."""

    @post("/blobs/{digest:str}", status_code=501)
    async def blob_upload(self, digest: FromPath[str]) -> Response[Any]:
        """Blob uploads (part of create)."""
        return _unsupported("POST /api/blobs", _MODELS)


MODEL_ROUTES: tuple[ControllerRouterHandler, ...] = (
    OllamaModelsController,
    OllamaUnsupportedController,
)
"""The model routes."""
