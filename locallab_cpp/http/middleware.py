"""The ASGI stack around the Litestar app, in one ordered list.

Outermost first; each layer sees a request before the ones below it and its response after:

1. ``request_counter`` counts every HTTP request, refused ones included (/system/info).
2. ``normalize_path`` rewrites the path the way clients' habits need before anything looks
   at it: a trailing slash dropped (``/v1/models/``), doubled slashes collapsed, a doubled
   ``/v1/v1`` prefix (a base URL ending in /v1 joined with a /v1/... path) made one. No
   redirect: clients POST, and a redirected POST loses its body in many of them. Every layer
   below, Litestar's router and the error formats see the normalized path.
3. ``host_check`` refuses a Host header the server does not answer to (DNS rebinding).
4. ``cors`` answers preflights and adds CORS headers to every response, errors included:
   a 429 or 401 produced below it still reaches a browser's script.
5. ``api_key`` refuses requests without the configured key (Authorization: Bearer).
6. ``rate_limit`` throttles per client, innermost so that what is refused above it (a
   foreign host, a preflight, a missing key) spends no budget. It never throttles a CORS
   preflight (a pass-through CORS layer lets those through), nor a loopback client unless
   ``rate_limit_loopback`` is set.

Then Litestar routes. These layers wrap Litestar's whole ASGI handler, not only matched
routes (Litestar's own ``middleware=`` does that): unknown paths and wrong methods are
counted and limited too. Host check, CORS and API key are pass-through slots for now; the
settings that switch them on come with the hardening issue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from litestar.datastructures import State
from litestar.types import ASGIApp, Receive, Scope, Send

from locallab_cpp.config import Settings
from locallab_cpp.http.errors import ErrorFormats
from locallab_cpp.http.ratelimit import RateLimiter, RateLimitMiddleware

ORDER = ("request_counter", "normalize_path", "host_check", "cors", "api_key", "rate_limit")
"""The layers' names, outermost first."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One slot of the stack: its name and how it wraps the app beneath it."""

    name: str
    wrap: Callable[[ASGIApp], ASGIApp]


class RequestCounter:
    """Counts HTTP requests for /system/info's request_count."""

    name = "request_counter"

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.state.request_count += 1
        await self.app(scope, receive, send)


API_PREFIX = "/v1"
"""The prefix some clients double: given a base URL that already ends in /v1, they append
/v1/chat/completions to it."""


def normalize_path(path: str) -> str:
    """``path`` with clients' habits undone: runs of slashes made one, a repeated /v1 prefix
    made one, a trailing slash dropped. The root ``/`` stays as it is."""
    if "//" in path:
        path = "/" + "/".join(part for part in path.split("/") if part)
    doubled = API_PREFIX + API_PREFIX
    while path == doubled or path.startswith(doubled + "/"):
        path = path[len(API_PREFIX) :]
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class PathNormalizer:
    """Rewrites ``scope["path"]`` (and ``raw_path``) with :func:`normalize_path`, so that
    ``/v1/models/`` and ``/v1/v1/chat/completions`` reach their routes instead of a 404."""

    name = "normalize_path"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = normalize_path(scope["path"])
            if path != scope["path"]:
                # A copy, not an edit: the scope the server handed in stays what it received.
                scope = cast("Scope", {**scope, "path": path})
                raw = scope.get("raw_path")
                if raw is not None:
                    # Latin-1 maps bytes to characters one to one, and normalizing only
                    # touches "/" and "v1", so percent-escapes in raw_path survive as sent.
                    scope["raw_path"] = normalize_path(raw.decode("latin-1")).encode("latin-1")
        await self.app(scope, receive, send)


class PassThrough:
    """A slot whose checks are not configured yet: hands every request on unchanged."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _pass_through(name: str) -> Layer:
    return Layer(name, lambda app: PassThrough(app, name))


def _rate_limit(settings: Settings, formats: ErrorFormats) -> Layer:
    def wrap(app: ASGIApp) -> ASGIApp:
        if not settings.rate_limit_enabled:
            return app
        limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        return RateLimitMiddleware(
            app, limiter, formats, limit_loopback=settings.rate_limit_loopback
        )

    return Layer("rate_limit", wrap)


def layers(settings: Settings, state: State, formats: ErrorFormats) -> list[Layer]:
    """The stack's layers in :data:`ORDER`, outermost first."""
    stack = [
        Layer("request_counter", lambda app: RequestCounter(app, state)),
        Layer("normalize_path", PathNormalizer),
        _pass_through("host_check"),
        _pass_through("cors"),
        _pass_through("api_key"),
        _rate_limit(settings, formats),
    ]
    assert tuple(layer.name for layer in stack) == ORDER
    return stack


def build(app: ASGIApp, stack: Sequence[Layer]) -> ASGIApp:
    """``app`` wrapped in ``stack``, whose first layer ends up outermost."""
    for layer in reversed(stack):
        app = layer.wrap(app)
    return app


def names(handler: ASGIApp) -> Iterator[str]:
    """The names of the layers of a built stack, outermost first (for tests and debugging).

    A layer is anything with a ``name`` and the ``app`` it wraps; Litestar's own handler,
    which has no name, ends the walk.
    """
    while isinstance(name := getattr(handler, "name", None), str) and hasattr(handler, "app"):
        yield name
        handler = handler.app
