"""How /infill reports errors: llama-server's ``{"error": {"code", "message", "type"}}``.

llama.vim reads only ``content`` (an answer without one shows nothing) and llama.vscode
shows the HTTP failure, so the body matters to people reading it: it is llama-server's,
``code`` being the HTTP status and ``type`` its error type names.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar.openapi.spec import OpenAPIType, Schema

from locallab_cpp.errors import ErrorKind
from locallab_cpp.http.errors import Problem

_OF_KIND: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error"),
    ErrorKind.FORBIDDEN: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "invalid_request_error"),
    ErrorKind.MODEL_NOT_FOUND: (404, "not_found_error"),
    ErrorKind.NO_MODEL: (503, "unavailable_error"),
    ErrorKind.CONFLICT: (409, "invalid_request_error"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error"),
    ErrorKind.CONTEXT_LENGTH: (400, "exceed_context_size_error"),
    ErrorKind.RATE_LIMITED: (429, "unavailable_error"),
    ErrorKind.BUSY: (503, "unavailable_error"),
    ErrorKind.UNAVAILABLE: (503, "unavailable_error"),
    ErrorKind.ABORTED: (503, "unavailable_error"),
    ErrorKind.DISCONNECTED: (499, "invalid_request_error"),
    ErrorKind.ENGINE_FAILURE: (500, "server_error"),
    ErrorKind.CONFIG: (500, "server_error"),
    ErrorKind.INTERNAL: (500, "server_error"),
}


class InfillErrors:
    """/infill's :class:`~locallab_cpp.http.errors.ErrorRenderer`."""

    body_schema: ClassVar[Schema] = Schema(
        type=OpenAPIType.OBJECT,
        required=["error"],
        properties={
            "error": Schema(
                type=OpenAPIType.OBJECT,
                required=["code", "message", "type"],
                properties={
                    "code": Schema(type=OpenAPIType.INTEGER),
                    "message": Schema(type=OpenAPIType.STRING),
                    "type": Schema(type=OpenAPIType.STRING),
                },
            )
        },
    )
    """The error body at /schema (http/openapi.py)."""

    def status(self, kind: ErrorKind) -> int:
        """llama-server's status for ``kind``."""
        return _OF_KIND.get(kind, (500, ""))[0]

    def body(self, problem: Problem, status: int) -> Any:
        """``{"error": {"code": status, "message", "type"}}``."""
        return {"error": error_object(problem, status)}


def error_object(problem: Problem, status: int) -> dict[str, Any]:
    """The inside of the envelope: also what a failed stream sends as its last event."""
    kind_status, kind_type = _OF_KIND.get(problem.kind, (500, "server_error"))
    if kind_status != status:  # a status HTTP fixed (Litestar's 404, 405, 413)
        kind_type = "server_error" if status >= 500 else "invalid_request_error"
    return {"code": status, "message": problem.detail, "type": kind_type}


INFILL_ERRORS = InfillErrors()
