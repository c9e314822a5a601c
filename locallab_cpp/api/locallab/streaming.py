"""LocalLab's streamed generations: raw text in ``data:`` events, errors as ``event: error``
with ``{"detail"}``, then ``data: [DONE]`` (decisions.md, "Streaming")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec

from locallab_cpp.api.locallab.errors import error_body
from locallab_cpp.engine.types import GenerationHandle
from locallab_cpp.errors import LocalLabError, scrub
from locallab_cpp.http.sse import DONE, EventStream, data_event, event_stream
from locallab_cpp.serving.streaming import text_chunks


def error_event(detail: str) -> bytes:
    """An ``event: error`` carrying ``{"detail": ...}`` (JSON: always one data line)."""
    payload = msgspec.json.encode(error_body(scrub(detail))).decode("utf-8")
    return data_event(payload, event="error")


async def stream_events(handle: GenerationHandle) -> AsyncIterator[bytes]:
    """SSE bytes for one generation. Closing this iterator early cancels the generation."""
    after_cr = False
    try:
        # aclosing: closing this iterator closes text_chunks at once, which cancels.
        async with aclosing(text_chunks(handle)) as chunks:
            async for text in chunks:
                if after_cr and text.startswith("\n"):
                    text = text[1:]  # the LF of a CRLF split across two chunks: one line end
                after_cr = text.endswith("\r")
                if text:
                    yield data_event(text)
    except LocalLabError as exc:
        yield error_event(exc.detail)
    yield DONE


def stream_response(handle: GenerationHandle) -> EventStream:
    """The text/event-stream response of a streamed /generate or /chat."""
    return event_stream(stream_events(handle))
