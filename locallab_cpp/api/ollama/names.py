"""Model names as Ollama writes them (``id:tag``) and the registry id a name means.

Ollama's clients name every model ``name:tag`` and believe what the server lists, so a
name the server does not know is Ollama's 404, never "the loaded model" as on the
OpenAI API, and a registry model whose file is not on disk is one to pull first.
"""

from __future__ import annotations

from locallab_cpp.errors import ModelNotDownloaded, ModelNotFound, printable
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec

LATEST = "latest"


def ollama_name(spec: ModelSpec) -> str:
    """How /api/tags and every Ollama answer name ``spec``: ``<id>:latest``."""
    return f"{spec.id}:{LATEST}"


def not_found(name: str) -> ModelNotFound:
    """Ollama's 404 for a model it cannot serve, with what to do about it."""
    error = ModelNotFound(name)
    error.detail = (
        f'model "{printable(name)}" not found, try pulling it first (POST /api/pull, or '
        "`python -m locallab_cpp models pull`; GET /api/tags lists the models on disk)"
    )
    return error


def not_pulled(name: str, model_id: str) -> ModelNotDownloaded:
    """Ollama's 404 for a registry model whose file is not on disk yet, with the three
    ways to fetch it (the generation request itself does not, without --pull-on-demand)."""
    error = ModelNotDownloaded(model_id)
    error.detail = (
        f'model "{printable(name)}" not found, try pulling it first: POST /api/pull '
        f'{{"model": "{printable(model_id)}"}}, `python -m locallab_cpp models pull '
        f"{printable(model_id)}` or POST /models/load (GET /api/tags lists the models on disk)"
    )
    return error


def model_of(models: ModelManager, name: str | None, *, on_disk: bool = True) -> str:
    """The registry id ``name`` means (an id, ``id:tag`` or a --model-alias).

    Raises Ollama's 404 for an unknown name and, with ``on_disk``, for a model whose file
    is not on this machine yet (a generation request does not download gigabytes)."""
    model_id = models.resolve(name) if name else None
    if model_id is None:
        raise not_found(name or "")
    if on_disk:
        spec = models.registry.get(model_id)
        if models.resident(model_id) is None and models.registry.local_path(spec) is None:
            raise not_pulled(name or model_id, model_id)
    return model_id
