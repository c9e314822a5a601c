"""Server-Sent Events framing for streamed generations (decisions.md, "Streaming")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec

from locallab_cpp.engine.types import GenerationHandle, TextChunk
from locallab_cpp.errors import LocalLabError, error_body, scrub

logger = logging.getLogger("locallab_cpp")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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
    try:
        async for event in handle.events():
            if isinstance(event, TextChunk) and event.text:
                yield data_event(event.text)
    except LocalLabError as exc:
        yield error_event(exc.detail)
    except Exception:  # never leave a client hanging without [DONE]
        logger.exception("stream failed")
        yield error_event("Internal server error; see the server log.")
    finally:
        handle.cancel()  # a no-op once the generation has finished
    yield DONE
