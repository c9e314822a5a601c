"""The ASGI stack around the Litestar app, in one ordered list.

Outermost first; each layer sees a request before the ones below it and its response after:

1. ``request_counter`` counts every HTTP request, refused ones included (/system/info), and
   by API family and status with its duration (/metrics).
2. ``normalize_path`` rewrites the path the way clients' habits need before anything looks
   at it: a trailing slash dropped (``/v1/models/``), doubled slashes collapsed, a doubled
   ``/v1/v1`` prefix (a base URL ending in /v1 joined with a /v1/... path) made one. No
   redirect: clients POST, and a redirected POST loses its body in many of them. Every layer
   below, Litestar's router and the error formats see the normalized path.
3. ``host_check`` refuses a Host header the server does not answer to (DNS rebinding) with
   403, and an oversized request head with 431 (``http/access.py``).
4. ``cors`` answers preflights (204 for an allowed origin, 403 for others), refuses a
   request from a foreign ``Origin`` with 403, and adds CORS headers to every response to
   an allowed origin, errors included: a 401, 415 or 429 produced below it still reaches a
   browser's script (``http/cors.py``).
5. ``api_key`` refuses requests without one of the configured keys (Authorization: Bearer,
   or x-api-key) with 401; /health and preflights need none. With no key set it passes
   everything, made-up keys included (OpenAI clients insist on sending one).
6. ``content_type`` refuses a POST, PUT, PATCH or DELETE whose body is not declared JSON
   with 415 (the text/plain and form bodies a page may send cross-site unannounced).
7. ``rate_limit`` throttles per client, innermost so that what is refused above it (a
   foreign host, a preflight, a missing key) spends no budget. It never throttles a CORS
   preflight (the CORS layer answers those itself), nor a loopback client unless
   ``rate_limit_loopback`` is set.

Then Litestar routes. These layers wrap Litestar's whole ASGI handler, not only matched
routes (Litestar's own ``middleware=`` does that): unknown paths and wrong methods are
counted, checked and limited too. Every refusal is rendered in the error format of the
path's API. docs/security.md says what each layer protects against.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from locallab_cpp.config import Settings
from locallab_cpp.http.access import ApiKeyCheck, HostCheck, JsonOnly, allowed_host_names
from locallab_cpp.http.cors import Cors
from locallab_cpp.http.errors import ErrorFormats
from locallab_cpp.http.families import UNKNOWN, ApiFamilies
from locallab_cpp.http.ratelimit import RateLimiter, RateLimitMiddleware
from locallab_cpp.serving import telemetry

ORDER = (
    "request_counter",
    "normalize_path",
    "host_check",
    "cors",
    "api_key",
    "content_type",
    "rate_limit",
)
"""The layers' names, outermost first."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One slot of the stack: its name and how it wraps the app beneath it."""

    name: str
    wrap: Callable[[ASGIApp], ASGIApp]


class RequestCounter:
    """Counts HTTP requests for /system/info's request_count, and for /metrics by API
    family and status, with their duration.

    Outermost, so every answer is seen, refusals included, and a stream's duration runs to
    its last byte (the app returns once the body is sent). A request whose app raised
    before answering is counted as 500, what the server then sends.
    """

    name = "request_counter"

    def __init__(self, app: ASGIApp, state: State, families: ApiFamilies = UNKNOWN) -> None:
        self.app = app
        self.state = state
        self.families = families

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.state.request_count += 1
        started = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            family = self.families.of(normalize_path(scope["path"]))
            telemetry.record_request(family, status, time.monotonic() - started)


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


def _host_check(settings: Settings, formats: ErrorFormats) -> Layer:
    allowed = allowed_host_names(settings)
    return Layer(
        "host_check",
        lambda app: HostCheck(app, formats, allowed, max_header_bytes=settings.max_header_bytes),
    )


def _rate_limit(settings: Settings, formats: ErrorFormats) -> Layer:
    def wrap(app: ASGIApp) -> ASGIApp:
        if not settings.rate_limit_enabled:
            return app
        limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        return RateLimitMiddleware(
            app, limiter, formats, limit_loopback=settings.rate_limit_loopback
        )

    return Layer("rate_limit", wrap)


def layers(
    settings: Settings, state: State, formats: ErrorFormats, families: ApiFamilies = UNKNOWN
) -> list[Layer]:
    """The stack's layers in :data:`ORDER`, outermost first; ``families`` names the API
    of a path for the request metrics."""
    stack = [
        Layer("request_counter", lambda app: RequestCounter(app, state, families)),
        Layer("normalize_path", PathNormalizer),
        _host_check(settings, formats),
        Layer("cors", lambda app: Cors(app, formats, settings.cors_origins)),
        Layer("api_key", lambda app: ApiKeyCheck(app, formats, settings.api_keys)),
        Layer("content_type", lambda app: JsonOnly(app, formats)),
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
