"""How the Anthropic Messages API reports errors: Anthropic's statuses and its body,
``{"type": "error", "error": {"type", "message"}}``.

Anthropic's SDKs pick the exception class from the status (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 529 OverloadedError...) and
retry 408, 409, 429 and 5xx themselves; Claude Code shows ``error.message`` to the user and
retries a 400 with fewer beta features, so a 400 is only for a request that is really wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar.openapi.spec import OpenAPIType, Schema

from locallab_cpp.api.anthropic.responses import ErrorBody, ErrorDetail
from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.errors import Problem

OVERLOADED = 529
"""Anthropic's status for "overloaded, retry later" (its SDKs retry it)."""

# (status, error type) of each kind.
_OF_KIND: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error"),
    ErrorKind.FORBIDDEN: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "invalid_request_error"),
    ErrorKind.MODEL_NOT_FOUND: (404, "not_found_error"),
    ErrorKind.NO_MODEL: (503, "api_error"),
    ErrorKind.CONFLICT: (409, "invalid_request_error"),
    ErrorKind.TOO_LARGE: (413, "request_too_large"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error"),
    # Anthropic answers "prompt is too long" with a 400, as this server does.
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorKind.BUSY: (OVERLOADED, "overloaded_error"),
    ErrorKind.UNAVAILABLE: (503, "api_error"),
    # An unload or a model switch ended it: trying again helps, as with a busy server.
    ErrorKind.ABORTED: (OVERLOADED, "overloaded_error"),
    ErrorKind.DISCONNECTED: (499, "invalid_request_error"),
    ErrorKind.ENGINE_FAILURE: (500, "api_error"),
    ErrorKind.CONFIG: (500, "api_error"),
    ErrorKind.INTERNAL: (500, "api_error"),
}

# A status HTTP fixed (Litestar's 404, 405, 413, the rate limiter's 429) whatever the kind.
_OF_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    OVERLOADED: "overloaded_error",
}


def error_type(problem: Problem, status: int) -> str:
    """Anthropic's error type of ``problem`` answered with ``status``."""
    kind_status, kind_type = _OF_KIND.get(problem.kind, (500, "api_error"))
    if kind_status == status:
        return kind_type
    return _OF_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(problem: Problem, status: int) -> ErrorBody:
    """The body of an error response, also the payload of a failed stream's ``error``."""
    return ErrorBody(error=ErrorDetail(type=error_type(problem, status), message=problem.detail))


class AnthropicErrors:
    """The Anthropic API's :class:`~locallab_cpp.http.errors.ErrorRenderer`."""

    body_schema: ClassVar[Schema] = Schema(
        type=OpenAPIType.OBJECT,
        required=["type", "error"],
        properties={
            "type": Schema(type=OpenAPIType.STRING, const="error"),
            "error": Schema(
                type=OpenAPIType.OBJECT,
                required=["type", "message"],
                properties={
                    "type": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                },
            ),
        },
    )
    """The error body at /schema (http/openapi.py)."""

    def status(self, kind: ErrorKind) -> int:
        """Anthropic's status for ``kind``."""
        return _OF_KIND.get(kind, (500, ""))[0]

    def body(self, problem: Problem, status: int) -> Any:
        """``{"type": "error", "error": {"type", "message"}}``."""
        return error_body(problem, status)


ANTHROPIC_ERRORS = AnthropicErrors()
