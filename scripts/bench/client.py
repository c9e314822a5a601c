"""The benchmark's HTTP clients: a small streaming client and the counters of ours."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.config import BenchError


@dataclass
class StreamResult:
    """One streamed request as the client saw it."""

    t_sent: float
    t_first: float | None = None
    t_last: float | None = None
    t_done: float = math.nan
    events: int = 0
    text: str = ""

    @property
    def ttft(self) -> float:
        return (self.t_first if self.t_first is not None else self.t_done) - self.t_sent


@dataclass
class Counters:
    """The server's token counters (GET /system/info, active_model)."""

    generated: int
    prompt: int
    cached: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.generated - other.generated, self.prompt - other.prompt, self.cached - other.cached
        )


class Client:
    """The HTTP side of phase 2."""

    def __init__(self, http: httpx.AsyncClient, streams: StreamClient) -> None:
        self.http = http
        self.streams = streams
        self.has_counters = True

    async def get_json(self, path: str) -> Any:
        reply = await self.http.get(path)
        reply.raise_for_status()
        return reply.json()

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        reply = await self.http.post(path, json=body)
        if reply.status_code != 200:
            raise BenchError(f"POST {path} -> {reply.status_code}: {reply.text[:300]}")
        return reply.json()

    async def counters(self) -> Counters:
        info = await self.get_json("/system/info")
        model = info.get("active_model") or {}
        try:
            return Counters(
                int(model["generated_tokens"]),
                int(model["prompt_tokens"]),
                int(model["cached_prompt_tokens"]),
            )
        except (KeyError, TypeError, ValueError):
            self.has_counters = False
            return Counters(0, 0, 0)

    async def stream(self, path: str, body: dict[str, Any]) -> StreamResult:
        """POST with ``stream: true`` and time every SSE event."""
        return await self.streams.stream(path, {**body, "stream": True})


class StreamClient:
    """A small HTTP/1.1 client for streamed requests, with keep-alive connections.

    httpx parses a chunked body in pure Python (h11), several layers deep, for every SSE
    event. On a 2-core machine that CPU is taken from llama.cpp's two threads: in
    interleaved runs it cost about 2% of single-stream decode (92.0 against 94.2 tok/s).
    A streaming client written in C (curl, a browser) costs less, so the benchmark reads
    streams with asyncio's StreamReader and parses only what it needs.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream(self, path: str, body: dict[str, Any]) -> StreamResult:
        """POST ``body`` and time every SSE event; retries once on a stale connection."""
        payload = json.dumps(body).encode("utf-8")
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode("ascii") + payload
        while True:
            result = StreamResult(t_sent=time.perf_counter())
            reused = bool(self._idle)
            if reused:
                reader, writer = self._idle.pop()
                if reader.at_eof():
                    writer.close()
                    continue
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue  # the server closed an idle connection: try the next one
                raise
            return await self._read(reader, writer, head, result)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        result: StreamResult,
    ) -> StreamResult:
        reusable = False
        try:
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            headers = {}
            for line in header_lines:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip().lower()
            chunked = "chunked" in headers.get("transfer-encoding", "")
            if status != 200:
                text = b"".join([c async for c, _ in _body_chunks(reader, headers, chunked)])
                raise BenchError(f"POST -> {status}: {text[:300].decode(errors='replace')}")
            parser = SseParser(result)
            async for chunk, stamp in _body_chunks(reader, headers, chunked):
                parser.feed(chunk, stamp)
            parser.finish()
            reusable = chunked and headers.get("connection") != "close"
        finally:
            if reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()
        return result

    def close(self) -> None:
        for _reader, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _body_chunks(
    reader: asyncio.StreamReader, headers: dict[str, str], chunked: bool
) -> AsyncIterator[tuple[bytes, float]]:
    """The body's pieces, each with the time it arrived."""
    if not chunked:
        length = headers.get("content-length")
        data = await (reader.readexactly(int(length)) if length else reader.read())
        yield data, time.perf_counter()
        return
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # trailers
            return
        data = (await reader.readexactly(size + 2))[:-2]
        yield data, time.perf_counter()


class SseParser:
    """Splits a text/event-stream into events and records them in a StreamResult."""

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.buffer = b""
        self.stamp = 0.0  # arrival of the piece holding the current event's first byte
        self.parts: list[str] = []
        self.done = False

    def feed(self, data: bytes, stamp: float) -> None:
        if not self.buffer:
            self.stamp = stamp
        self.buffer += data
        while not self.done:
            end = self.buffer.find(b"\n\n")
            if end == -1:
                return
            block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            self._event(block.decode("utf-8"), self.stamp)
            self.stamp = stamp

    def _event(self, block: str, stamp: float) -> None:
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            elif line.startswith("event:"):
                name = line[6:].strip()
        if not data and not name:
            return
        payload = "\n".join(data)
        if name == "error":
            raise BenchError(f"stream error: {payload}")
        if payload == "[DONE]":
            self.result.t_done = time.perf_counter()
            self.done = True
            return
        self.result.events += 1
        self.parts.append(payload)
        if self.result.t_first is None:
            self.result.t_first = stamp
        self.result.t_last = stamp

    def finish(self) -> None:
        if math.isnan(self.result.t_done):
            self.result.t_done = time.perf_counter()
        self.result.text = "".join(self.parts)
