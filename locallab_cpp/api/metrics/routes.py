"""GET /metrics, in Prometheus' text exposition format 0.0.4 (docs/api.md, "Metrics").

Off unless the server was started with --metrics: the figures say how busy the server is
and which models it holds, which not every deployment wants to show. It asks for the API
key like every route but /health. The route belongs to the LocalLab API (the root), so its
errors are LocalLab's.
"""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from locallab_cpp.api.metrics.gauges import read_families
from locallab_cpp.config import Settings
from locallab_cpp.errors import NotFound
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.metrics import CONTENT_TYPE
from locallab_cpp.serving.telemetry import REGISTRY

MEDIA_TYPE = CONTENT_TYPE.removesuffix("; charset=utf-8")
"""What the response is given: Litestar appends the charset to text/* media types itself,
which makes CONTENT_TYPE exactly."""

OFF_DETAIL = (
    "Metrics are off. Start the server with --metrics (LOCALLAB_METRICS=1) to serve them "
    "at GET /metrics."
)


class MetricsController(Controller):
    """The Prometheus scrape target."""

    tags = ["System"]

    @get(
        "/metrics",
        summary="Prometheus metrics (with --metrics)",
        media_type=MEDIA_TYPE,
        sync_to_thread=False,
    )
    def metrics(self, models: NamedDependency[ModelManager], state: State) -> Response[str]:
        """Counters and histograms of requests, tokens, latencies and loads, and gauges of
        each resident model's slots, queue, KV pool and prompt cache."""
        settings: Settings = state.settings
        if not settings.metrics:
            raise NotFound(OFF_DETAIL)
        return Response(REGISTRY.render(read_families(models)), media_type=MEDIA_TYPE)
