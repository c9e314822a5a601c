"""Server-Sent Events framing (decisions.md, "Streaming"), for any API's payloads.

What goes in the events is each API's business (``locallab_cpp.api.<api>.streaming``);
this module only frames them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from litestar.response import Stream

DONE = b"data: [DONE]\n\n"
"""The event that ends a stream of the LocalLab and OpenAI APIs."""
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


def data_event(text: str, *, event: str | None = None) -> bytes:
    """One event carrying ``text``; each line of it becomes its own ``data:`` line.

    SSE clients join the data lines of an event with "\\n", so the text comes back exactly.
    ``event`` names the event type (``event: error``); unnamed events are "message"s.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in lines)).encode("utf-8") + b"\n"


async def with_heartbeat(
    events: AsyncIterator[bytes], beat: bytes, every: float
) -> AsyncIterator[bytes]:
    """``events``, with ``beat`` sent whenever none came for ``every`` seconds.

    A long prompt is computed before the first token (minutes for 20k tokens on a CPU);
    a client whose read timeout is shorter would give up on a silent stream. Closing this
    closes ``events``, with the event it was waiting for cancelled first (an async
    generator cannot be closed while a step of it runs)."""
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield beat
                continue
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield chunk
    finally:
        if pending is not None:
            pending.cancel()
            with suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
