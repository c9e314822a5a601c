"""CORS: which web pages may call the server from a browser, and nothing else.

The ``cors`` slot of :mod:`locallab_cpp.http.middleware`'s stack, below the Host check and
above the API key, content-type check and rate limiter, so that a 401, 415 or 429 produced
below it still carries the CORS headers a page's script needs to read it.

Off by default: no origin is allowed. A request with an ``Origin`` header that is neither
allowed nor this server's own (the page served at the Host it asked for) is refused with
403 before any work is done: browsers send Origin on every cross-origin fetch and on
cross-site POSTs, while curl and the SDKs send none and pass. Preflights are answered
here, never handed on (so never rate-limited): 204 for an allowed origin, else 403.

Credentials (cookies, HTTP auth) are never allowed: an API key travels in a header the
page sets itself, which needs no credentials mode. So even "*" is safe to send as is.
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.access import header, is_preflight, shown
from locallab_cpp.http.errors import ErrorFormats, Problem, send_problem

ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_ALLOW_HEADERS = b"Authorization, Content-Type, X-API-Key"
EXPOSE_HEADERS = b"Retry-After, WWW-Authenticate"
"""Response headers a page's script may read: when to retry a 429, why a 401."""
PREFLIGHT_MAX_AGE = b"600"


def normalize_origin(origin: str) -> str:
    """An origin as compared: lower case, without a trailing slash."""
    return origin.strip().lower().rstrip("/")


def _authority(origin: str) -> str:
    """``host[:port]`` of an origin, for comparing it with a Host header."""
    return origin.partition("://")[2]


class Cors:
    """Answers preflights, refuses foreign origins and marks responses to allowed ones."""

    name = "cors"

    def __init__(self, app: ASGIApp, formats: ErrorFormats, origins: Iterable[str]) -> None:
        self.app = app
        self.formats = formats
        allowed = {normalize_origin(origin) for origin in origins}
        self.any_origin = "*" in allowed
        self.origins = frozenset(allowed - {"*"})

    def allows(self, origin: str) -> bool:
        """Whether pages of ``origin`` may call the server."""
        return self.any_origin or normalize_origin(origin) in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if is_preflight(scope):
            if self.allows(origin):
                await self._preflight(scope, send, origin)
            else:
                await self._refuse(scope, send, origin)
            return
        if self.allows(origin):
            await self.app(scope, receive, self._marking(send, origin))
        elif self._same_origin(scope, origin):
            # The server's own pages (/schema) need no CORS headers; the Host passed the
            # Host check, so an Origin naming it is this server.
            await self.app(scope, receive, send)
        else:
            await self._refuse(scope, send, origin)

    @staticmethod
    def _same_origin(scope: Scope, origin: str) -> bool:
        host = header(scope, b"host")
        return host is not None and _authority(normalize_origin(origin)) == host.strip().lower()

    def _allow_origin(self, origin: str) -> bytes:
        # "*" is sent as such (never with credentials); otherwise the origin is echoed.
        return b"*" if self.any_origin else origin.strip().encode("latin-1")

    def _marking(self, send: Send, origin: str) -> Send:
        added = [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
            (b"vary", b"Origin"),
        ]

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *added]
                message = {**message, "headers": headers}
            await send(message)

        return marked

    async def _preflight(self, scope: Scope, send: Send, origin: str) -> None:
        requested = header(scope, b"access-control-request-headers")
        headers = [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-allow-methods", ALLOW_METHODS),
            # The origin is trusted: whatever headers its SDK sends (x-stainless-*,
            # anthropic-version...) may come.
            (
                b"access-control-allow-headers",
                requested.encode("latin-1") if requested else DEFAULT_ALLOW_HEADERS,
            ),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"content-length", b"0"),
        ]
        if header(scope, b"access-control-request-private-network") == "true":
            # Chrome asks this before a public page may call a server on this machine.
            headers.append((b"access-control-allow-private-network", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _refuse(self, scope: Scope, send: Send, origin: str) -> None:
        problem = Problem.of(
            ErrorKind.FORBIDDEN,
            f"Cross-origin request from '{shown(origin)}' refused. To let that web "
            "page call this server, start it with --cors-origin ORIGIN "
            "(LOCALLAB_CORS_ORIGINS).",
        )
        await send_problem(send, self.formats.for_path(scope["path"]), problem)
