"""Responses in the OpenAPI schema as they are really sent.

Errors, in the format each API really answers with:

Litestar documents a 400 of its own shape (``{"status_code", "detail", "extra"}``) for
every route with a body, but every error is rendered by the API that owns the path
(http/errors.py). So after the app is built, each operation's error responses are given
its API's body schema, and ``4XX``/``5XX`` ranges document the rest (404, 413, 429, 503...):
clients generated from /schema, and the schemathesis suite, then see what is sent.

Streams: a handler that returns ``SomeResponse | EventStream`` is documented by Litestar
as ``oneOf: [SomeResponse, {}]``; the empty schema matches every body, so no JSON answer
could match exactly one. It becomes ``anyOf``, which says the same without that flaw.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Schema

from locallab_cpp.http.errors import ErrorFormats

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_RANGES = {"4XX": "Client error", "5XX": "Server error"}


def document_responses(app: Litestar, formats: ErrorFormats) -> None:
    """Give every operation's error responses the body schema of its API's renderer (its
    ``body_schema`` attribute; renderers without one are left as Litestar documents them),
    and make its stream-or-JSON unions ``anyOf``.

    Call once all routes are registered: registering another one rebuilds the schema.
    """
    openapi = app.openapi_schema
    for path, item in (openapi.paths or {}).items():
        schema: Schema | None = getattr(formats.for_path(path), "body_schema", None)
        if schema is None:
            continue
        for method in _METHODS:
            operation: Any = getattr(item, method, None)
            if operation is None:
                continue
            responses = dict(operation.responses or {})
            for response in responses.values():
                for media in (getattr(response, "content", None) or {}).values():
                    _any_of_stream(media.schema)
            for status, response in responses.items():
                if status[:1] in "45":
                    responses[status] = _error_response(response.description, schema)
            for status, description in _RANGES.items():
                responses.setdefault(status, _error_response(description, schema))
            operation.responses = responses


def _any_of_stream(schema: Any) -> None:
    one_of = getattr(schema, "one_of", None)
    if one_of and any(isinstance(s, Schema) and s == Schema() for s in one_of):
        schema.any_of, schema.one_of = one_of, None


def _error_response(description: str, schema: Schema) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=schema)},
    )
