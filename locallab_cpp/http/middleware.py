"""The ASGI stack around the Litestar app, in one ordered list.

Outermost first; each layer sees a request before the ones below it and its response after:

1. ``request_counter`` counts every HTTP request, refused ones included (/system/info).
2. ``host_check`` refuses a Host header the server does not answer to (DNS rebinding).
3. ``cors`` answers preflights and adds CORS headers to every response, errors included:
   a 429 or 401 produced below it still reaches a browser's script.
4. ``api_key`` refuses requests without the configured key (Authorization: Bearer).
5. ``rate_limit`` throttles per client, innermost so that what is refused above it (a
   foreign host, a preflight, a missing key) spends no budget. It never throttles a CORS
   preflight (a pass-through CORS layer lets those through).

Then Litestar routes. These layers wrap Litestar's whole ASGI handler, not only matched
routes (Litestar's own ``middleware=`` does that): unknown paths and wrong methods are
counted and limited too. Host check, CORS and API key are pass-through slots for now; the
settings that switch them on come with the hardening issue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from litestar.datastructures import State
from litestar.types import ASGIApp, Receive, Scope, Send

from locallab_cpp.config import Settings
from locallab_cpp.http.errors import ErrorFormats
from locallab_cpp.http.ratelimit import RateLimiter, RateLimitMiddleware

ORDER = ("request_counter", "host_check", "cors", "api_key", "rate_limit")
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
        return RateLimitMiddleware(app, limiter, formats)

    return Layer("rate_limit", wrap)


def layers(settings: Settings, state: State, formats: ErrorFormats) -> list[Layer]:
    """The stack's layers in :data:`ORDER`, outermost first."""
    stack = [
        Layer("request_counter", lambda app: RequestCounter(app, state)),
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
