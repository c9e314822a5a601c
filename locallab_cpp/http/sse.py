"""Server-Sent Events framing for streamed generations (decisions.md, "Streaming")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.response import Stream

from locallab_cpp.engine.types import GenerationHandle, TextChunk
from locallab_cpp.errors import LocalLabError, error_body, scrub

logger = logging.getLogger("locallab_cpp")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(Stream):
    """A ``text/event-stream`` response.

    A route that answers JSON or a stream has JSON as its media type, and Litestar lets the
    route's media type win over a Stream's own; this class keeps the SSE one.
    """

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


def event_stream(events: AsyncIterator[bytes]) -> EventStream:
    """An SSE response over ``events`` (already framed bytes)."""
    return EventStream(events, media_type="text/event-stream", headers=SSE_HEADERS)


def data_event(text: str) -> bytes:
    """One event carrying ``text``; each line of it becomes its own ``data:`` line.

    SSE clients join the data lines of an event with "\\n", so the text comes back exactly.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f"data: {line}\n" for line in lines).encode("utf-8") + b"\n"


def error_event(detail: str) -> bytes:
    """An ``event: error`` carrying ``{"detail": ...}``."""
    payload = msgspec.json.encode(error_body(scrub(detail))).decode("utf-8")
    return f"event: error\ndata: {payload}\n\n".encode()


async def stream_events(handle: GenerationHandle) -> AsyncIterator[bytes]:
    """SSE bytes for one generation. Closing this iterator early cancels the generation."""
    after_cr = False
    try:
        async for event in handle.events():
            if isinstance(event, TextChunk) and event.text:
                text = event.text
                if after_cr and text.startswith("\n"):
                    text = text[1:]  # the LF of a CRLF split across two chunks: one line end
                after_cr = text.endswith("\r")
                if text:
                    yield data_event(text)
    except LocalLabError as exc:
        yield error_event(exc.detail)
    except Exception:  # never leave a client hanging without [DONE]
        logger.exception("stream failed")
        yield error_event("Internal server error; see the server log.")
    finally:
        handle.cancel()  # a no-op once the generation has finished
    yield DONE
