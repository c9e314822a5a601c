"""How the LocalLab API reports errors: the reference's status codes and ``{"detail"}``.

decisions.md ("Errors"): 400 invalid input, 404 unknown route or model, 409 conflicting
load, 413 input too long, 429 rate limit, 503 no model or busy (with Retry-After), 500 only
for a genuine engine failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar.openapi.spec import OpenAPIType, Schema

from locallab_cpp.errors import ErrorKind, LocalLabError
from locallab_cpp.http.errors import Problem

STATUS_OF_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.MODEL_NOT_FOUND: 404,
    ErrorKind.NO_MODEL: 503,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorKind.CONTEXT_LENGTH: 413,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.BUSY: 503,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.ABORTED: 503,
    # nginx's "client closed request": logged as such, never read by the client.
    ErrorKind.DISCONNECTED: 499,
    ErrorKind.ENGINE_FAILURE: 500,
    ErrorKind.CONFIG: 500,
    ErrorKind.INTERNAL: 500,
}


def error_body(detail: str) -> dict[str, str]:
    """The JSON body of every LocalLab error response."""
    return {"detail": detail}


class LocalLabErrors:
    """The LocalLab API's :class:`~locallab_cpp.http.errors.ErrorRenderer`."""

    body_schema: ClassVar[Schema] = Schema(
        type=OpenAPIType.OBJECT,
        required=["detail"],
        properties={"detail": Schema(type=OpenAPIType.STRING)},
        additional_properties=False,
    )
    """The error body at /schema (http/openapi.py)."""

    def status(self, kind: ErrorKind) -> int:
        """The reference's status code for ``kind``."""
        return STATUS_OF_KIND.get(kind, 500)

    def body(self, problem: Problem, status: int) -> Any:
        """``{"detail": "..."}``, whatever the status."""
        return error_body(problem.detail)


LOCALLAB_ERRORS = LocalLabErrors()


def status_of(exc: LocalLabError) -> int:
    """The status the LocalLab API answers ``exc`` with."""
    return LOCALLAB_ERRORS.status(exc.kind)
