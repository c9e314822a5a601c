"""The APIs the server speaks, each a thin translation of the serving core.

An API is an :class:`Api`: its routes, the path prefix it owns and its error renderer.
``create_app`` mounts every API's routes under its prefix and registers its renderer for
that prefix, so an error on any path under it (an unknown route, a wrong method, a 429
from the rate limiter) is answered in that API's format. The LocalLab API owns the root,
the default for paths no other API claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from litestar import Router
from litestar.types import ControllerRouterHandler

from locallab_cpp.http.errors import ErrorFormats, ErrorRenderer


@dataclass(frozen=True, slots=True)
class Api:
    """One API: its name, the path prefix it owns, its routes and its error format."""

    name: str
    prefix: str
    """"/" for the root, else e.g. "/v1" (OpenAI) or "/api" (Ollama); longest prefix wins,
    so "/v1/messages" (Anthropic) can sit inside "/v1"."""
    routes: tuple[ControllerRouterHandler, ...]
    """Route handlers with paths relative to ``prefix``."""
    errors: ErrorRenderer
    root_routes: tuple[ControllerRouterHandler, ...] = ()
    """Route handlers mounted at the root instead, outside ``prefix`` (the chat page's
    ``GET /``); their errors are the root API's."""

    def route_handlers(self) -> list[ControllerRouterHandler]:
        """The routes, mounted under the prefix so none can stray outside it, then the
        root routes."""
        if self.prefix.strip("/") == "":
            return [*self.routes, *self.root_routes]
        return [Router(path=self.prefix, route_handlers=list(self.routes)), *self.root_routes]


def error_formats(apis: Sequence[Api]) -> ErrorFormats:
    """The error renderers of ``apis`` by prefix; the root API's is the default."""
    roots = [api for api in apis if api.prefix.strip("/") == ""]
    if len(roots) != 1:
        raise ValueError("exactly one API must own the root: its errors are the default")
    [root] = roots
    formats = ErrorFormats(root.errors)
    for api in apis:
        if api is not root:
            formats.register(api.prefix, api.errors)
    return formats
