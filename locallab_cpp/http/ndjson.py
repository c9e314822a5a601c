"""Newline-delimited JSON framing (Ollama's streams): one JSON object per line.

What goes in the objects is each API's business; this module only frames them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.response import Stream

NDJSON_MEDIA_TYPE = "application/x-ndjson"
NDJSON_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_encoder = msgspec.json.Encoder()


class NdjsonStream(Stream):
    """An ``application/x-ndjson`` response.

    A route that answers JSON or a stream has JSON as its media type, and Litestar lets the
    route's media type win over a Stream's own; this class keeps the NDJSON one.
    """

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = NDJSON_MEDIA_TYPE
        return super().to_asgi_response(*args, **kwargs)


def ndjson_line(obj: Any) -> bytes:
    """``obj`` (anything msgspec encodes) as one line of the stream."""
    return _encoder.encode(obj) + b"\n"


def ndjson_stream(lines: AsyncIterator[bytes]) -> NdjsonStream:
    """An NDJSON response over ``lines`` (each already framed by :func:`ndjson_line`)."""
    return NdjsonStream(lines, media_type=NDJSON_MEDIA_TYPE, headers=NDJSON_HEADERS)
