"""Server-Sent Events framing (decisions.md, "Streaming")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from helpers import parse_sse

from locallab_cpp.api.locallab.streaming import error_event, stream_events
from locallab_cpp.engine.types import Finished, GenerationHandle, TextChunk
from locallab_cpp.errors import EngineFailure
from locallab_cpp.http.sse import DONE, SSE_HEADERS, data_event, with_heartbeat


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("hello", b"data: hello\n\n"),
        (" leading space", b"data:  leading space\n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("\n", b"data: \ndata: \n\n"),
        ("\r\n", b"data: \ndata: \n\n"),
        ("", b"data: \n\n"),
        ("a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("end\n", b"data: end\ndata: \n\n"),
        ("caf\u00e9 \u2603", "data: caf\u00e9 \u2603\n\n".encode()),
    ],
)
def test_data_event_framing(text: str, frame: bytes) -> None:
    assert data_event(text) == frame


@pytest.mark.parametrize(
    "text", ["x", "two\nlines", "\n\n", "  spaced  ", "tab\tand: colon", "data: fake", "[DONE]x"]
)
def test_data_event_round_trips_through_an_sse_client(text: str) -> None:
    assert parse_sse(data_event(text).decode()) == [("message", text)]


def test_error_event_carries_detail_json() -> None:
    frame = error_event("engine failed")
    assert frame == b'event: error\ndata: {"detail":"engine failed"}\n\n'
    [(kind, data)] = parse_sse(frame.decode())
    assert kind == "error"
    assert json.loads(data) == {"detail": "engine failed"}


def test_error_event_stays_one_data_line_and_scrubbed() -> None:
    frame = error_event('bad "quote"\nsecond line in /home/alice/x.gguf')
    assert frame.count(b"\n") == 3  # event line, one data line, blank line
    [(_, data)] = parse_sse(frame.decode())
    detail = json.loads(data)["detail"]
    assert detail.startswith('bad "quote"\nsecond line')
    assert "alice" not in detail


def test_done_and_headers() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert SSE_HEADERS["Cache-Control"] == "no-cache"


async def _collect(handle: GenerationHandle, events: list[object]) -> list[bytes]:
    for event in events:
        handle.push(event)  # type: ignore[arg-type]
    return [frame async for frame in stream_events(handle)]


def test_stream_events_success() -> None:
    async def main() -> tuple[list[bytes], GenerationHandle]:
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        frames = await _collect(
            handle,
            [TextChunk("a"), TextChunk(""), TextChunk("b\nc"), Finished("stop", 1, 2, 0)],
        )
        return frames, handle

    frames, handle = asyncio.run(main())
    assert frames == [b"data: a\n\n", b"data: b\ndata: c\n\n", DONE]  # empty chunk skipped
    assert handle.done and not handle.cancelled.is_set()


def test_stream_events_engine_error() -> None:
    async def main() -> list[bytes]:
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        return await _collect(handle, [TextChunk("a"), EngineFailure("decode failed")])

    frames = asyncio.run(main())
    assert frames == [b"data: a\n\n", error_event("decode failed"), DONE]


def test_stream_events_unexpected_error_still_ends_with_done() -> None:
    async def main() -> list[bytes]:
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        handle.push(TextChunk("a"))
        handle.queue.put_nowait(RuntimeError("/home/alice boom"))  # type: ignore[arg-type]
        return [frame async for frame in stream_events(_Exploding(handle))]  # type: ignore[arg-type]

    frames = asyncio.run(main())
    assert frames[-1] == DONE
    assert frames[-2].startswith(b"event: error\n")
    assert b"alice" not in b"".join(frames) and b"boom" not in b"".join(frames)


class _Exploding:
    """A handle whose events() raises a non-LocalLab error after its text."""

    def __init__(self, handle: GenerationHandle) -> None:
        self.handle = handle
        self.cancelled = False

    async def events(self):  # type: ignore[no-untyped-def]
        yield TextChunk("a")
        raise RuntimeError("/home/alice boom")

    def cancel(self) -> None:
        self.cancelled = True


def test_closing_the_stream_early_cancels_the_generation() -> None:
    async def main() -> GenerationHandle:
        cancelled: list[GenerationHandle] = []
        handle = GenerationHandle(loop=asyncio.get_running_loop(), on_cancel=cancelled.append)
        handle.push(TextChunk("a"))
        handle.push(TextChunk("b"))
        stream = stream_events(handle)
        assert await stream.__anext__() == b"data: a\n\n"
        await stream.aclose()  # the client went away
        assert cancelled == [handle]
        return handle

    handle = asyncio.run(main())
    assert handle.cancelled.is_set()


def test_with_heartbeat_beats_while_quiet_and_closes_the_source() -> None:
    closed: list[bool] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.sleep(0.2)
            yield b"second"
            await asyncio.sleep(60)  # never reached: the reader leaves before
            yield b"third"
        finally:
            closed.append(True)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        stream = with_heartbeat(source(), b"beat", every=0.01)
        async for chunk in stream:
            got.append(chunk)
            if got.count(b"beat") > 1 and b"second" in got:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    got = asyncio.run(main())
    assert got[0] == b"first"
    assert b"beat" in got[1 : got.index(b"second")]
    assert closed == [True]
