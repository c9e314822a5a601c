"""The LocalLab API as the app mounts it: its routes at the root, its error format."""

from __future__ import annotations

from locallab_cpp.api import Api
from locallab_cpp.api.locallab.errors import LOCALLAB_ERRORS
from locallab_cpp.api.locallab.generation import GenerationController
from locallab_cpp.api.locallab.models import ModelsController
from locallab_cpp.api.metrics.routes import MetricsController
from locallab_cpp.api.system import SystemController

LOCALLAB_API = Api(
    name="locallab",
    prefix="/",
    routes=(GenerationController, ModelsController, SystemController, MetricsController),
    errors=LOCALLAB_ERRORS,
)
"""/generate, /chat, /generate/batch, /models/*, /health, /system/info and /metrics."""
