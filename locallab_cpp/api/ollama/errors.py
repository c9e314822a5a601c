"""How the Ollama API reports errors: a status and ``{"error": "<message>"}``.

The ollama Python client raises ``ResponseError(error, status_code)`` and never retries,
a 429 included, so a busy server answers 503 with a message that says to retry.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar.openapi.spec import OpenAPIType, Schema

from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.errors import Problem

_STATUS_OF_KIND: dict[ErrorKind, int] = {
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
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.BUSY: 503,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.ABORTED: 503,
    ErrorKind.DISCONNECTED: 499,
    ErrorKind.ENGINE_FAILURE: 500,
    ErrorKind.CONFIG: 500,
    ErrorKind.INTERNAL: 500,
}


class OllamaErrors:
    """The Ollama API's :class:`~locallab_cpp.http.errors.ErrorRenderer`."""

    body_schema: ClassVar[Schema] = Schema(
        type=OpenAPIType.OBJECT,
        required=["error"],
        properties={"error": Schema(type=OpenAPIType.STRING)},
    )
    """The error body at /schema (http/openapi.py)."""

    def status(self, kind: ErrorKind) -> int:
        """Ollama's status for ``kind``."""
        return _STATUS_OF_KIND.get(kind, 500)

    def body(self, problem: Problem, status: int) -> Any:
        """``{"error": "<message>"}``."""
        return {"error": problem.detail}


OLLAMA_ERRORS = OllamaErrors()
