"""GET /v1/models and /v1/models/{id}: the registry, with the context a request can use."""

from __future__ import annotations

import asyncio

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from locallab_cpp.api.openai.common import OWNED_BY
from locallab_cpp.api.openai.responses import ModelCard, ModelList
from locallab_cpp.errors import ModelNotFound
from locallab_cpp.models.catalog import CatalogEntry, catalog, describe
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.placement import held_bytes


def card(entry: CatalogEntry, models: ModelManager) -> ModelCard:
    """One model in OpenAI's shape, with its effective context length.

    ``created`` is when a resident model was loaded; for the others, which have no such
    moment, 0. ``meta`` says what the model serves (``kind``) and, for a resident one, the
    memory it holds.
    """
    engine = models.resident(entry.spec.id)
    # A resident engine knows its real slot context; the catalog predicts the same number.
    context = engine.info.n_ctx if engine is not None else entry.context_length
    meta: dict[str, object] = {
        "name": entry.spec.display_name,
        "kind": entry.spec.kind,
        "parameters": entry.spec.parameters,
        "quantization": entry.spec.quantization,
        "size_bytes": entry.size_bytes,
    }
    if engine is not None:
        meta["memory_bytes"] = held_bytes(engine)
    return ModelCard(
        id=entry.spec.id,
        object="model",
        created=int(engine.info.loaded_at) if engine is not None else 0,
        owned_by=OWNED_BY,
        context_length=context,
        max_model_len=context,
        loaded=engine is not None,
        meta=meta,
    )


class ModelsController(Controller):
    """The models a request's ``model`` may name."""

    path = "/models"
    tags = ["OpenAI"]

    @get("/", summary="List models (OpenAI)")
    async def list_models(self, models: NamedDependency[ModelManager]) -> ModelList:
        """Every registry model; ``context_length`` is what one request can use."""
        # The catalog touches the disk (hub cache look-ups): keep it off the event loop.
        entries = await asyncio.to_thread(catalog, models.registry, models.settings)
        return ModelList(object="list", data=[card(e, models) for e in entries])

    # A path parameter, not a str one: registry ids hold slashes ("microsoft/phi-2").
    @get("/{model_id:path}", summary="One model (OpenAI)")
    async def get_model(
        self, model_id: FromPath[str], models: NamedDependency[ModelManager]
    ) -> ModelCard:
        """The model ``model_id``; 404 (code model_not_found) when the registry lacks it."""
        model_id = model_id.removeprefix("/")
        if model_id not in models.registry:
            raise ModelNotFound(model_id)
        spec = models.registry.get(model_id)
        entry = await asyncio.to_thread(describe, models.registry, spec, models.settings)
        return card(entry, models)
