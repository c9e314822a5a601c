"""What scripts/capture_claude_code.py and scripts/capture_codex.py share: a recorder of the
requests a CLI makes and the base of the stub servers that answer them."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named SSE event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Recorder:
    """The requests seen so far, written to ``out`` as they arrive."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any], body: bytes) -> None:
        with self.lock:
            n = len(self.records)
            record["n"] = n
            self.records.append(record)
            if body:
                (self.out / f"body-{n}.json").write_bytes(body)
            with (self.out / "requests.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class RecordingHandler(BaseHTTPRequestHandler):
    """Records every request into :attr:`recorder`; subclasses answer them."""

    protocol_version = "HTTP/1.1"
    recorder: ClassVar[Recorder]
    extra_headers: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[stub] {self.command} {self.path}\n")

    def _record(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        split = urlsplit(self.path)
        self.recorder.add(
            {
                "method": self.command,
                "path": split.path,
                "query": split.query,
                "headers": dict(self.headers.items()),
                "body_bytes": len(body),
                "body": parsed,
            },
            body,
        )
        return parsed

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")
