"""LocalLab's streamed generations: raw text in ``data:`` events, errors as ``event: error``
with ``{"detail"}``, then ``data: [DONE]`` (decisions.md, "Streaming")."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import msgspec

from locallab_cpp.api.locallab.errors import error_body
from locallab_cpp.engine.types import GenerationHandle
from locallab_cpp.errors import LocalLabError, scrub
from locallab_cpp.http.sse import DONE, EventStream, data_event, event_stream
from locallab_cpp.serving.chat import ChatRun
from locallab_cpp.serving.events import TextDelta
from locallab_cpp.serving.streaming import text_chunks


def error_event(detail: str) -> bytes:
    """An ``event: error`` carrying ``{"detail": ...}`` (JSON: always one data line)."""
    payload = msgspec.json.encode(error_body(scrub(detail))).decode("utf-8")
    return data_event(payload, event="error")


async def run_texts(run: ChatRun) -> AsyncGenerator[str, None]:
    """The text of a one-choice chat run, chunk by chunk (its other events carry none:
    LocalLab's chat asks for no reasoning split and no tools)."""
    async with aclosing(run.events()) as events:
        async for _, event in events:
            if isinstance(event, TextDelta) and event.text:
                yield event.text


def stream_events(handle: GenerationHandle) -> AsyncGenerator[bytes, None]:
    """SSE bytes for one generation. Closing this iterator early cancels the generation."""
    return text_events(text_chunks(handle))


async def text_events(texts: AsyncGenerator[str, None]) -> AsyncGenerator[bytes, None]:
    """SSE bytes for one generation's texts (serving.streaming.text_chunks, or
    :func:`run_texts`). Closing this iterator early closes ``texts``, which cancels."""
    after_cr = False
    try:
        # aclosing: closing this iterator closes the texts at once, which cancels.
        async with aclosing(texts) as chunks:
            async for text in chunks:
                if after_cr and text.startswith("\n"):
                    text = text[1:]  # the LF of a CRLF split across two chunks: one line end
                after_cr = text.endswith("\r")
                if text:
                    yield data_event(text)
    except LocalLabError as exc:
        yield error_event(exc.detail)
    yield DONE


def stream_response(texts: AsyncGenerator[str, None]) -> EventStream:
    """The text/event-stream response of a streamed /generate or /chat."""
    return event_stream(text_events(texts))
