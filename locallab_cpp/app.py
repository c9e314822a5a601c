"""The application factory. Nothing happens at import time: ``create_app`` builds the app,
and its lifespan opens the model manager, loads the start-up model and closes it all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from locallab_cpp import __version__, sysinfo, web
from locallab_cpp.api import Api, error_formats
from locallab_cpp.api.anthropic.routes import ANTHROPIC_API
from locallab_cpp.api.infill.routes import INFILL_API
from locallab_cpp.api.locallab.routes import LOCALLAB_API
from locallab_cpp.api.ollama.routes import OLLAMA_API
from locallab_cpp.api.openai.routes import OPENAI_API
from locallab_cpp.api.rerank.routes import RERANK_APIS
from locallab_cpp.api.responses.routes import RESPONSES_API
from locallab_cpp.api.web.routes import WEB_API
from locallab_cpp.config import Settings
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http import middleware
from locallab_cpp.http.errors import exception_handlers
from locallab_cpp.http.families import ApiFamilies
from locallab_cpp.http.openapi import document_responses
from locallab_cpp.http.validation import validate_body_strictly
from locallab_cpp.models.manager import EngineFactory, ModelManager
from locallab_cpp.models.registry import Registry

logger = logging.getLogger("locallab_cpp")


def provide_models(state: State) -> ModelManager:
    """Dependency: the model manager of this app."""
    manager: ModelManager = state.models
    return manager


BUILTIN_APIS: tuple[Api, ...] = (
    LOCALLAB_API,
    OPENAI_API,
    ANTHROPIC_API,
    RESPONSES_API,
    OLLAMA_API,
    INFILL_API,
    *RERANK_APIS,
    WEB_API,
)
"""The APIs every server speaks. A new API adds its :class:`~locallab_cpp.api.Api` here."""


def _default_factory() -> EngineFactory:
    from locallab_cpp.engine.llama.engine import open_llama_engine

    return open_llama_engine


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    engine_factory: EngineFactory | None = None,
    apis: Sequence[Api] = BUILTIN_APIS,
) -> Litestar:
    """Build the app serving ``apis`` (the LocalLab API by default).

    ``registry`` defaults to the package's models.toml with the settings' user file laid
    over it; ``engine_factory`` to the llama.cpp engine. Unit tests pass a fake factory to
    run the HTTP layer without a model.
    """
    registry = registry or Registry.load(settings.models_file)
    factory = engine_factory or _default_factory()
    formats = error_formats(apis)
    state = State({"settings": settings, "request_count": 0, "started_at": time.monotonic()})

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        manager = ModelManager(registry, settings, factory)
        app.state.models = manager
        try:
            # py-cpuinfo is slow on first use; pay for it now, not in a request.
            await asyncio.to_thread(sysinfo.cpu_static)
            if not settings.no_model:
                model_id = settings.model or registry.default_id
                try:
                    await manager.load(model_id)
                except LocalLabError as exc:
                    logger.error("could not load %s at start: %s", model_id, exc.detail)
            loaded = manager.current_id or "no model (POST /models/load to load one)"
            also = (
                ""
                if settings.ollama_port is None
                else f", and at http://{settings.host}:{settings.ollama_port} for Ollama clients"
            )
            print(
                f"locallab_cpp {__version__} serving {loaded} at "
                f"http://{settings.host}:{settings.port}{also} (API docs at /schema)",
                flush=True,
            )
            yield
        finally:
            await manager.close()

    app = Litestar(
        route_handlers=[handler for api in apis for handler in api.route_handlers()],
        dependencies={"models": Provide(provide_models, sync_to_thread=False)},
        exception_handlers=exception_handlers(formats),
        lifespan=[lifespan],
        before_request=validate_body_strictly,
        state=state,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="locallab_cpp",
            version=__version__,
            description="The LocalLab HTTP API over llama.cpp, with continuous batching.",
            path="/schema",
        ),
        debug=False,
    )
    document_responses(app, formats)  # each API's error body at /schema, not Litestar's
    # Counter, host check, CORS, API key, rate limit: see http/middleware.py for the order.
    families = ApiFamilies.build(
        ((api.name, api.prefix) for api in apis),
        (route.path for route in app.routes),
        exact=[(path, WEB_API.name) for path in web.PAGE_PATHS],
    )
    app.asgi_handler = middleware.build(
        app.asgi_handler, middleware.layers(settings, state, formats, families)
    )
    return app
