"""The bodies of Ollama's model endpoints (its docs/api.md): version, tags, show, ps, pull,
delete. Requests accept null and unknown fields, as Ollama's own server does."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

ModelName = Annotated[str, msgspec.Meta(max_length=512)]


class ModelRequest(msgspec.Struct, kw_only=True):
    """A request that names a model: ``model``, or ``name`` as older clients send it."""

    model: ModelName | None = None
    name: ModelName | None = None

    @property
    def named(self) -> str:
        """The model it names ("" if none)."""
        return self.model or self.name or ""


class ShowRequest(ModelRequest, kw_only=True):
    """POST /api/show."""

    verbose: bool | None = None
    """Also the metadata arrays (up to 64 items each; the vocabulary is never sent)."""


class PullRequest(ModelRequest, kw_only=True):
    """POST /api/pull."""

    insecure: bool | None = None
    """Accepted; downloads go through huggingface_hub, which always checks certificates."""
    stream: bool | None = None
    """False: one ``{"status": "success"}`` body once the file is on disk."""


class DeleteRequest(ModelRequest, kw_only=True):
    """DELETE /api/delete."""


class VersionResponse(msgspec.Struct):
    """GET /api/version."""

    version: str


class ModelDetails(msgspec.Struct, kw_only=True):
    """``details`` of a model, from its GGUF header."""

    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagModel(msgspec.Struct, kw_only=True):
    """One entry of GET /api/tags."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(msgspec.Struct):
    """GET /api/tags."""

    models: list[TagModel]


class ShowResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """POST /api/show."""

    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    license: str = ""


class RunningModel(msgspec.Struct, kw_only=True):
    """One entry of GET /api/ps."""

    name: str
    model: str
    size: int
    size_vram: int
    digest: str
    details: ModelDetails
    expires_at: str
    context_length: int


class PsResponse(msgspec.Struct):
    """GET /api/ps."""

    models: list[RunningModel]


class ProgressLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of POST /api/pull's stream (also its ``stream: false`` body)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
