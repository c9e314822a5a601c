"""The one error hierarchy of locallab_cpp and its one mapping to HTTP responses.

Every error body is ``{"detail": "..."}``. Details are written for the user: they say what
went wrong and what to do, and never carry a file-system path, a traceback or a user name.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

logger = logging.getLogger("locallab_cpp")


class LocalLabError(Exception):
    """Base of every error the server reports to a client."""

    status_code: int = HTTP_500_INTERNAL_SERVER_ERROR
    default_detail: str = "Internal server error"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        self.detail = detail or self.default_detail
        self.retry_after = retry_after
        super().__init__(self.detail)


class ConfigError(LocalLabError):
    """The settings or the registry are invalid; raised at start, before serving."""

    status_code = 500
    default_detail = "Invalid configuration"


class InvalidRequest(LocalLabError):
    """The request is malformed or a field is out of range (400)."""

    status_code = 400
    default_detail = "Invalid request"


class NotFound(LocalLabError):
    """Unknown route or model (404)."""

    status_code = 404
    default_detail = "Not found"


class ModelNotFound(NotFound):
    """A model id the registry does not know."""

    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"Unknown model '{_printable(model_id)}'. "
            "GET /models/available lists the ids this server knows."
        )


class NoModelLoaded(LocalLabError):
    """A generation needs a model and none is loaded (503)."""

    status_code = 503
    default_detail = (
        "No model is loaded. Load one with POST /models/load "
        '{"model_id": "<id from GET /models/available>"}, or name one in "model_id".'
    )


class LoadConflict(LocalLabError):
    """Another model load is under way (409)."""

    status_code = 409
    default_detail = "Another model load is in progress; retry when it has finished."


class PayloadTooLarge(LocalLabError):
    """The prompt does not fit the context, or the body is over the size limit (413)."""

    status_code = 413
    default_detail = "Request body is too large."


class RateLimited(LocalLabError):
    """The client went over its request budget (429)."""

    status_code = 429
    default_detail = "Rate limit exceeded; slow down and retry after the given seconds."


class ServerBusy(LocalLabError):
    """Every slot and queue place is taken (503)."""

    status_code = 503
    default_detail = "The server is busy: every generation slot and queue place is taken."


class ModelUnavailable(LocalLabError):
    """A model cannot be loaded: missing file, failed download, bad GGUF (503)."""

    status_code = 503


class GenerationAborted(LocalLabError):
    """A generation was ended by an unload or a model switch (503)."""

    status_code = 503
    default_detail = "The generation was stopped because the model was unloaded or switched."


class ClientDisconnected(LocalLabError):
    """The client hung up before its answer was ready; nobody reads this response."""

    status_code = 499
    default_detail = "Client closed the request."


class EngineFailure(LocalLabError):
    """llama.cpp itself failed; the only error that is a 500."""

    status_code = 500
    default_detail = "The inference engine failed; see the server log."


# Absolute paths under the usual roots, home-relative paths and Windows drive paths. Route
# names such as /models/available are left alone.
_PATH_LIKE = re.compile(
    r"(?:[A-Za-z]:\\|~/|/(?:home|root|Users|tmp|var|usr|opt|etc|mnt|media|private|Volumes"
    r"|srv|proc|dev|lib|bin|snap|nix|run|workspace|work|data)(?=/|\b))[^\s'\"`]*"
)


def _printable(text: str, limit: int = 100) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def scrub(detail: str) -> str:
    """Remove anything that looks like a file-system path from a message for a client."""
    return _PATH_LIKE.sub("<path>", detail)


def error_body(detail: str) -> dict[str, str]:
    """The JSON body of every error response."""
    return {"detail": detail}


def _response(
    status: int,
    detail: str,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(content=error_body(scrub(detail)), status_code=status, headers=headers)


def describe_msgspec_error(message: str, key: str | None = None) -> str:
    """One validation problem as a user reads it: ``'temperature': Expected ...``.

    msgspec ends its messages with "- at `$.field`"; the field name is said plainly instead.
    """
    message = message.strip()
    match = re.search(r" - at `\$\.?([^`]*)`$", message)
    if match:
        message = message[: match.start()]
        key = key or match.group(1) or None
    if key in (None, "", "data") or (key or "").startswith("["):
        return f"request body: {message}"
    return f"'{key}': {message}"


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


def locallab_error_handler(_: Request[Any, Any, Any], exc: LocalLabError) -> Response[Any]:
    """Map our own errors to their status and detail."""
    if exc.status_code >= 500 and not isinstance(
        exc, NoModelLoaded | ServerBusy | ModelUnavailable | GenerationAborted
    ):
        logger.error("engine failure: %s", exc.detail)
    return _response(exc.status_code, exc.detail, exc.retry_after)


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Map Litestar's own HTTP errors (validation, 404, 405, 413...) to ``{"detail"}``."""
    if isinstance(exc, ValidationException):
        return _response(400, _validation_detail(exc))
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
    # Keep Litestar's headers (Allow on a 405, Retry-After) with our body.
    return _response(status, detail, headers=dict(exc.headers or {}))


def unexpected_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Last resort: log the traceback here, tell the client nothing about internals."""
    logger.exception("unhandled error", exc_info=exc)
    return _response(500, "Internal server error; see the server log.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    LocalLabError: locallab_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
