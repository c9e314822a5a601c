"""The benchmark's own HTTP client (scripts/bench/client.py): its figures are only as good as its
parsing of chunked SSE, so it is checked against a small scripted server."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """scripts/bench/client.py, imported as scripts/bench.py imports it (the package bench)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    module = importlib.import_module("bench.client")
    assert Path(module.__file__ or "").parent == SCRIPTS / "bench"
    return module


def chunked(pieces: Sequence[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return body + b"0\r\n\r\n"


def sse_response(pieces: Sequence[bytes]) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + chunked(pieces)


class ScriptedServer:
    """Answers each request on a connection with the next canned response."""

    def __init__(self, responses: list[bytes], *, one_per_connection: bool = False) -> None:
        self.responses = responses
        self.one_per_connection = one_per_connection
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.responses:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.responses.pop(0))
                await writer.drain()
                if self.one_per_connection:
                    break  # as a server closing an idle keep-alive connection
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def run_streams(
    bench: ModuleType, responses: list[bytes], n: int, *, one_per_connection: bool = False
) -> tuple[list, ScriptedServer]:
    server = ScriptedServer(responses, one_per_connection=one_per_connection)

    async def main() -> list:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = bench.StreamClient("127.0.0.1", port)
        try:
            return [await client.stream("/generate", {"prompt": "hi"}) for _ in range(n)]
        finally:
            client.close()
            srv.close()

    return asyncio.run(main()), server


def test_events_split_and_joined_across_chunks(bench: ModuleType) -> None:
    pieces = [
        b"data: Hel",  # an event split across two chunks
        b"lo\n\ndata: a\ndata: b\n\ndata:  two spaces\n\n",  # several events in one chunk
        b": a comment\n\n",
        b"data: [DONE]\n\n",
    ]
    [result], _ = run_streams(bench, [sse_response(pieces)], 1)
    assert result.events == 3
    assert result.text == "Helloa\nb two spaces"
    assert result.t_sent <= result.t_first <= result.t_last <= result.t_done


def test_keep_alive_connection_is_reused(bench: ModuleType) -> None:
    one = sse_response([b"data: x\n\n", b"data: [DONE]\n\n"])
    results, server = run_streams(bench, [one, one], 2)
    assert [r.text for r in results] == ["x", "x"]
    assert server.connections == 1
    assert all(b'"prompt": "hi"' in r for r in server.requests)


def test_a_connection_the_server_closed_is_replaced(bench: ModuleType) -> None:
    one = sse_response([b"data: y\n\n", b"data: [DONE]\n\n"])
    results, server = run_streams(bench, [one, one], 2, one_per_connection=True)
    assert [r.text for r in results] == ["y", "y"]
    assert server.connections == 2


def test_error_event_and_status_raise(bench: ModuleType) -> None:
    error = sse_response([b'event: error\ndata: {"detail": "boom"}\n\n', b"data: [DONE]\n\n"])
    with pytest.raises(bench.BenchError, match="boom"):
        run_streams(bench, [error], 1)
    body = b'{"detail": "queue full"}'
    refused = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with pytest.raises(bench.BenchError, match=r"503.*queue full"):
        run_streams(bench, [refused], 1)
