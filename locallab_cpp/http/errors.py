"""Error responses: every failure, rendered in the format of the API its path belongs to.

A domain error (:class:`~locallab_cpp.errors.LocalLabError`), one of Litestar's own
(unknown route, wrong method, body too large, validation) and an unexpected exception are
each turned into one :class:`Problem`. :class:`ErrorFormats` then picks the
:class:`ErrorRenderer` registered for the longest prefix of the request's path (LocalLab,
the default, for everything today) and that renderer decides the status and the body.
The rate limiter, which answers before Litestar routes anything, renders its 429 the same
way with :func:`send_problem`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap, Send

from locallab_cpp.errors import (
    SERVER_FAULTS,
    ErrorKind,
    LocalLabError,
    describe_msgspec_error,
    scrub,
)

logger = logging.getLogger("locallab_cpp")

INTERNAL_DETAIL = "Internal server error; see the server log."


@dataclass(frozen=True, slots=True)
class Problem:
    """One error, in no API's format yet."""

    kind: ErrorKind
    detail: str
    """Written for the user; scrubbed of paths by :meth:`of`."""
    retry_after: int | None = None
    status: int | None = None
    """Set when HTTP itself fixed the status (Litestar's 404, 405, 413...); else the API's
    renderer derives it from ``kind``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers the status needs whatever the format (Allow on a 405)."""

    @classmethod
    def of(
        cls,
        kind: ErrorKind,
        detail: str,
        *,
        retry_after: int | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Problem:
        """A problem with ``detail`` scrubbed of file-system paths."""
        return cls(kind, scrub(detail), retry_after, status, dict(headers or {}))

    @classmethod
    def from_error(cls, exc: LocalLabError) -> Problem:
        """The problem a domain error reports."""
        return cls.of(exc.kind, exc.detail, retry_after=exc.retry_after)


class ErrorRenderer(Protocol):
    """How one API says that something went wrong."""

    def status(self, kind: ErrorKind) -> int:
        """The HTTP status of an error of ``kind``."""
        ...

    def body(self, problem: Problem, status: int) -> Any:
        """The JSON body (anything msgspec encodes) of ``problem`` answered with ``status``."""
        ...


@dataclass(frozen=True, slots=True)
class RenderedError:
    """A problem in one API's format: status, JSON body and headers."""

    status: int
    body: Any
    headers: dict[str, str]


def render(renderer: ErrorRenderer, problem: Problem) -> RenderedError:
    """``problem`` in ``renderer``'s format; Retry-After travels as a header in all."""
    status = problem.status or renderer.status(problem.kind)
    headers = dict(problem.headers)
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return RenderedError(status, renderer.body(problem, status), headers)


class ErrorFormats:
    """The error format of each API, chosen by the longest registered prefix of a path.

    Prefixes match whole path segments: "/api" claims "/api" and "/api/tags", not
    "/apiary". A path no prefix claims (the LocalLab API's, at the root) gets the default.
    """

    def __init__(self, default: ErrorRenderer) -> None:
        self.default = default
        self._by_prefix: dict[str, ErrorRenderer] = {}

    def register(self, prefix: str, renderer: ErrorRenderer) -> None:
        """Render errors of paths under ``prefix`` (e.g. "/v1") with ``renderer``."""
        prefix = "/" + prefix.strip("/")
        if prefix == "/":
            self.default = renderer
            return
        if prefix in self._by_prefix and self._by_prefix[prefix] is not renderer:
            raise ValueError(f"error format for {prefix!r} registered twice")
        self._by_prefix[prefix] = renderer

    def for_path(self, path: str) -> ErrorRenderer:
        """The renderer of the API that ``path`` belongs to."""
        best = ""
        for prefix in self._by_prefix:
            if len(prefix) > len(best) and (path == prefix or path.startswith(prefix + "/")):
                best = prefix
        return self._by_prefix[best] if best else self.default

    def response(self, path: str, problem: Problem) -> Response[Any]:
        """A Litestar response for ``problem`` in the format of ``path``'s API."""
        rendered = render(self.for_path(path), problem)
        return Response(
            content=rendered.body,
            status_code=rendered.status,
            headers=rendered.headers,
            media_type="application/json",
        )


async def send_problem(send: Send, renderer: ErrorRenderer, problem: Problem) -> None:
    """Answer with ``problem`` on a bare ASGI ``send`` (for middleware outside Litestar)."""
    rendered = render(renderer, problem)
    body = msgspec.json.encode(rendered.body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers.items()),
    ]
    await send({"type": "http.response.start", "status": rendered.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# ----- Litestar's own errors ---------------------------------------------------------------

_KIND_OF_STATUS = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.TOO_LARGE,
    429: ErrorKind.RATE_LIMITED,
}


def http_problem(exc: HTTPException) -> Problem:
    """One of Litestar's errors (validation, 404, 405, 413...) as a problem; its status and
    headers (Allow on a 405) are kept."""
    if isinstance(exc, ValidationException):
        return Problem.of(ErrorKind.INVALID_REQUEST, _validation_detail(exc), status=400)
    status = exc.status_code
    detail = str(exc.detail) if exc.detail else "Error"
    if status == 400:
        # msgspec's decode errors end in " - at `$[...]`", which means nothing to a user.
        detail = re.sub(r" - at `\$[^`]*`$", "", detail)
        if not detail.startswith(("Invalid request", "JSON is malformed")):
            detail = "Invalid request: " + detail
    elif status == 404:
        detail = "Not found. See /schema for the routes this server serves."
    elif status == 413:
        detail = "Request body is too large."
    default = ErrorKind.INTERNAL if status >= 500 else ErrorKind.INVALID_REQUEST
    kind = _KIND_OF_STATUS.get(status, default)
    return Problem.of(kind, detail, status=status, headers=dict(exc.headers or {}))


def _validation_detail(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [
        describe_msgspec_error(str(item.get("message", "")), item.get("key"))
        for item in extra
        if isinstance(item, dict)
    ]
    if parts:
        return "Invalid request: " + "; ".join(parts)
    detail = str(exc.detail or "")
    if "JSON" in detail or "decode" in detail.lower():
        return "Malformed JSON in request body: " + detail
    return "Invalid request: " + detail if detail else "Invalid request"


def exception_handlers(formats: ErrorFormats) -> ExceptionHandlersMap:
    """Litestar's exception handlers: every error in the format of its path's API."""

    def on_domain_error(request: Request[Any, Any, Any], exc: LocalLabError) -> Response[Any]:
        if exc.kind in SERVER_FAULTS:
            logger.error("engine failure: %s", exc.detail)
        return formats.response(request.scope["path"], Problem.from_error(exc))

    def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        return formats.response(request.scope["path"], http_problem(exc))

    def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        # Log the traceback here; the client learns nothing about internals.
        logger.exception("unhandled error", exc_info=exc)
        problem = Problem.of(ErrorKind.INTERNAL, INTERNAL_DETAIL)
        return formats.response(request.scope["path"], problem)

    return {
        LocalLabError: on_domain_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
