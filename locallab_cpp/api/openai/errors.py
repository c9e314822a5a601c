"""How the OpenAI-compatible API reports errors: OpenAI's statuses and its envelope,
``{"error": {"message", "type", "param", "code"}}``.

OpenAI's SDKs pick the exception class from the status (400 BadRequestError, 404
NotFoundError, 429 RateLimitError...) and show ``message``; ``code`` is what programs test
(``context_length_exceeded``, ``model_not_found``), ``param`` names the offending field.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from litestar.openapi.spec import OpenAPIType, Schema

from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.errors import Problem

# (status, type, code) of each kind.
_OF_KIND: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", None),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error", "invalid_api_key"),
    ErrorKind.FORBIDDEN: (403, "permission_error", None),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "invalid_request_error", "method_not_allowed"),
    ErrorKind.MODEL_NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.NO_MODEL: (503, "server_error", "no_model_loaded"),
    ErrorKind.CONFLICT: (409, "invalid_request_error", "conflict"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error", "request_too_large"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error", "unsupported_media_type"),
    # OpenAI answers an over-long prompt with 400, never by truncating it silently.
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.BUSY: (503, "server_error", "server_busy"),
    ErrorKind.UNAVAILABLE: (503, "server_error", "model_unavailable"),
    ErrorKind.ABORTED: (503, "server_error", "generation_aborted"),
    ErrorKind.DISCONNECTED: (499, "invalid_request_error", None),
    ErrorKind.ENGINE_FAILURE: (500, "server_error", "engine_failure"),
    ErrorKind.CONFIG: (500, "server_error", None),
    ErrorKind.INTERNAL: (500, "server_error", None),
}

# A field named by the validation messages ("Invalid request: 'temperature': Expected...").
_PARAM = re.compile(r"^Invalid request: '([^']{1,80})'")


def _type_of_status(status: int) -> str:
    # A status HTTP fixed (Litestar's 404, 405, 413) without a kind of that status.
    return "server_error" if status >= 500 else "invalid_request_error"


class OpenAIErrors:
    """The OpenAI API's :class:`~locallab_cpp.http.errors.ErrorRenderer`."""

    body_schema: ClassVar[Schema] = Schema(
        type=OpenAPIType.OBJECT,
        required=["error"],
        properties={
            "error": Schema(
                type=OpenAPIType.OBJECT,
                required=["message", "type", "param", "code"],
                properties={
                    "message": Schema(type=OpenAPIType.STRING),
                    "type": Schema(type=OpenAPIType.STRING),
                    "param": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
                    "code": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
                },
            )
        },
    )
    """The error body at /schema (http/openapi.py)."""

    def status(self, kind: ErrorKind) -> int:
        """OpenAI's status for ``kind``."""
        return _OF_KIND.get(kind, (500, "", None))[0]

    def body(self, problem: Problem, status: int) -> Any:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": error_object(problem, status)}


def error_object(problem: Problem, status: int) -> dict[str, Any]:
    """The inside of the envelope: also what a failed stream sends as its last event."""
    kind_status, kind_type, code = _OF_KIND.get(problem.kind, (500, "server_error", None))
    error_type = kind_type if kind_status == status else _type_of_status(status)
    match = _PARAM.match(problem.detail)
    return {
        "message": problem.detail,
        "type": error_type,
        "param": param_of(problem) or (match.group(1) if match else None),
        "code": code,
    }


def param_of(problem: Problem) -> str | None:
    """The request field an error is about, where the kind alone says so."""
    return "model" if problem.kind is ErrorKind.MODEL_NOT_FOUND else None


OPENAI_ERRORS = OpenAIErrors()
