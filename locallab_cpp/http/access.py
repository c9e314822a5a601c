"""Who may talk to the server: the Host check, the API key and the JSON-only body rule.

Three layers of :mod:`locallab_cpp.http.middleware`'s stack (CORS, between the first two,
lives in :mod:`locallab_cpp.http.cors`); docs/security.md says what each one stops:

* :class:`HostCheck` (slot ``host_check``) refuses a Host header the server does not
  answer to, which defeats DNS rebinding: a web page whose own name was made to resolve to
  127.0.0.1 still sends its own name as Host. It also refuses an oversized request head.
* :class:`ApiKeyCheck` (slot ``api_key``) asks for one of the configured keys.
* :class:`JsonOnly` (slot ``content_type``, right after the key) accepts state-changing
  requests only with a JSON body: a page may send text/plain or a form cross-site without a
  preflight, never application/json.

Each refusal is rendered in the error format of the path's API, like the rate limiter's 429.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Iterable

from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send, WebSocketCloseEvent

from locallab_cpp import web
from locallab_cpp.config import Settings
from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.errors import ErrorFormats, Problem, send_problem

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names every server answers to, whatever it is bound to."""
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
"""Bind addresses that listen on every interface."""
OPEN_PATHS = frozenset({"/health", *web.PAGE_PATHS})
"""Paths answered without an API key: a liveness probe and the chat page's own files (the
same for everyone) carry no secret. Exact paths: ``/static/../v1/models`` is not one."""
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def shown(value: str, limit: int = 100) -> str:
    """A client-sent value as an error detail may quote it: printable and short."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in ``scope``, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def is_preflight(scope: Scope) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    if scope.get("method") != "OPTIONS":
        return False
    names = {key for key, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


# ----- Host ------------------------------------------------------------------------------


def host_name(value: str) -> str:
    """The name part of a Host header (or of an origin's authority): the port dropped, the
    brackets of an IPv6 literal dropped, lower case, a trailing dot dropped.

    ``[::1]:8000`` -> ``::1``; ``Localhost.:8000`` -> ``localhost``; ``example.org`` stays.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def is_ip_literal(name: str) -> bool:
    """Whether ``name`` is an IP address. A Host that is an address cannot come from DNS
    rebinding: the attacker's page always sends the attacker's own host name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def machine_names() -> set[str]:
    """This machine's own names (``socket.gethostname()``, its short form and the mDNS
    ``.local`` name), for servers bound to every interface. No DNS query is made."""
    full = socket.gethostname().lower().rstrip(".")
    if not full:
        return set()
    short = full.split(".", 1)[0]
    return {full, short, short + ".local"}


def allowed_host_names(settings: Settings) -> frozenset[str] | None:
    """The host names a request may name, or None when every Host is accepted ("*")."""
    extra = {host_name(name) for name in settings.allowed_hosts}
    if "*" in extra:
        return None
    names = set(LOOPBACK_NAMES) | extra
    bound = host_name(settings.host)
    if bound in WILDCARD_BINDS:
        names |= machine_names()
    else:
        names.add(bound)
    return frozenset(names)


class HostCheck:
    """Answers 403 to a Host header naming neither this server nor an allowed host, and
    431 to a request head over ``max_header_bytes``.

    IP addresses are always accepted (see :func:`is_ip_literal`), and so is a request
    without Host (HTTP/1.0; browsers always send one).
    """

    name = "host_check"

    def __init__(
        self,
        app: ASGIApp,
        formats: ErrorFormats,
        allowed: frozenset[str] | None,
        *,
        max_header_bytes: int,
    ) -> None:
        self.app = app
        self.formats = formats
        self.allowed = allowed
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            close: WebSocketCloseEvent = {"type": "websocket.close", "code": 1008, "reason": ""}
            await send(close)
        else:
            await send_problem(send, self.formats.for_path(scope["path"]), problem)

    def problem(self, scope: Scope) -> Problem | None:
        """Why the request must be refused, or None."""
        # uvicorn has parsed the head already; this makes the limit the same whichever HTTP
        # parser it used (httptools has none of its own).
        size = sum(len(key) + len(value) + 4 for key, value in scope["headers"])
        if size > self.max_header_bytes:
            return Problem.of(
                ErrorKind.TOO_LARGE,
                f"Request headers are too large ({size} bytes; at most {self.max_header_bytes}).",
                status=431,
            )
        if self.allowed is None:
            return None
        value = header(scope, b"host")
        if value is None:
            return None
        name = host_name(value)
        if name in self.allowed or is_ip_literal(name):
            return None
        return Problem.of(
            ErrorKind.FORBIDDEN,
            f"Host '{shown(value)}' is not a name this server answers to. If it is "
            "yours, start the server with --allowed-host NAME (LOCALLAB_ALLOWED_HOSTS).",
        )


# ----- API key ---------------------------------------------------------------------------


def _digest(key: str) -> bytes:
    # Comparing fixed-size digests keeps the time of a comparison independent of the
    # length of the key as well as of its content.
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()


def presented_keys(scope: Scope) -> list[str]:
    """The keys a request carries: ``Authorization: Bearer <key>`` (OpenAI clients) and
    ``x-api-key: <key>`` (Anthropic clients)."""
    keys: list[str] = []
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                keys.append(token.strip())
        elif key == b"x-api-key" and value.strip():
            keys.append(bytes(value).decode("latin-1").strip())
    return keys


class ApiKeyCheck:
    """Answers 401 with ``WWW-Authenticate: Bearer`` to a request without a configured key.

    /health and CORS preflights (which browsers send without credentials) need none. Every
    presented key is compared with every configured key in constant time. With no key
    configured every request passes, whatever key it carries.
    """

    name = "api_key"

    def __init__(self, app: ASGIApp, formats: ErrorFormats, keys: Iterable[str]) -> None:
        self.app = app
        self.formats = formats
        self.digests = tuple(_digest(key) for key in keys)

    def accepts(self, scope: Scope) -> bool:
        """Whether the request carries one of the keys."""
        ok = False
        for presented in presented_keys(scope):
            digest = _digest(presented)
            for expected in self.digests:
                # No early exit: the time taken does not say which key nearly matched.
                ok |= hmac.compare_digest(digest, expected)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.digests
            or scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or is_preflight(scope)
            or self.accepts(scope)
        ):
            await self.app(scope, receive, send)
            return
        detail = (
            "Invalid API key."
            if presented_keys(scope)
            else "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
        problem = Problem.of(ErrorKind.UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
        await send_problem(send, self.formats.for_path(scope["path"]), problem)


# ----- JSON bodies only ------------------------------------------------------------------


def is_json(content_type: str) -> bool:
    """``application/json``, with at most a UTF-8 charset (JSON is UTF-8, RFC 8259)."""
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    if media != "application/json":
        return False
    for param in params:
        key, _, value = param.partition("=")
        if key.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


class JsonOnly:
    """Answers 415 to a POST, PUT, PATCH or DELETE whose body is not declared JSON.

    A browser sends text/plain, form and multipart bodies cross-site without asking the
    server first (no preflight); a JSON body it never does. Refusing the others closes that
    door even for a CORS origin allowed by mistake. Browsers send Origin on every request of
    these methods, so a request without one is not a page's and passes whatever its type:
    LiteLLM's Ollama provider (aider's) posts JSON to /api/chat with no Content-Type, and
    Ollama's documented ``curl URL -d '{...}'`` sends it as a form. With an Origin, a
    request with no Content-Type passes when its body is empty: its first body chunk is
    read here to see, and handed on unchanged.
    """

    name = "content_type"

    def __init__(self, app: ASGIApp, formats: ErrorFormats) -> None:
        self.app = app
        self.formats = formats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        if header(scope, b"origin") is None:
            await self.app(scope, receive, send)  # not from a browser; see the docstring
            return
        content_type = header(scope, b"content-type")
        if content_type is not None:
            if is_json(content_type):
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, send, f"got {shown(content_type, 60)!r}")
            return
        # No Content-Type: peek until a body byte or the end of the body shows up.
        seen: list[ReceiveMessage] = []
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request" or message.get("body"):
                break
            if not message.get("more_body", False):
                break
        if seen[-1]["type"] == "http.request" and seen[-1].get("body"):
            await self._refuse(scope, send, "none was given")
            return

        async def replay() -> ReceiveMessage:
            return seen.pop(0) if seen else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, got: str) -> None:
        problem = Problem.of(
            ErrorKind.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json ({got}).",
            status=415,
        )
        await send_problem(send, self.formats.for_path(scope["path"]), problem)


# ----- start-up ----------------------------------------------------------------------------


def security_warnings(settings: Settings) -> list[str]:
    """What to warn about at start: an exposed server without a key, every web page allowed."""
    warnings: list[str] = []
    if not settings.is_loopback and not settings.api_keys:
        warnings.append(
            f"serving on {settings.host} without an API key: anyone who can reach this "
            "address can use the server. Set LOCALLAB_API_KEY (or --api-key), or bind "
            "127.0.0.1."
        )
    if "*" in settings.cors_origins and not settings.api_keys:
        warnings.append(
            "--cors-origin '*' without an API key: any web page open in a browser on this "
            "machine can use the server."
        )
    if "*" in settings.allowed_hosts and not settings.api_keys:
        warnings.append(
            "--allowed-host '*' turns the Host check off: web pages can reach this server "
            "by DNS rebinding unless an API key is set."
        )
    return warnings
