"""A local HTTP server that serves files the way the Hugging Face hub does, for tests.

huggingface_hub (2.x) fetches a file with ``HEAD {endpoint}/{repo}/resolve/{revision}/{file}``
(it needs ``X-Repo-Commit``, an ``ETag`` and ``Content-Length``), then ``GET`` on the same
URL, resuming with ``Range: bytes=N-`` when a connection drops. Point ``HF_ENDPOINT`` at
:attr:`FakeHub.url` and the real client downloads from here.

Knobs: ``rate`` throttles the body (bytes per second) so a download lasts long enough to
watch; ``cut_after`` drops the connection after that many body bytes on the first GET of a
file, like a network failure. Every request is recorded in :attr:`FakeHub.requests`.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 256 * 1024


@dataclass
class HubFile:
    """One file the fake hub serves."""

    path: Path
    size: int
    sha256: str
    rate: float | None = None
    cut_after: int | None = None
    gets: int = 0


@dataclass(frozen=True)
class Seen:
    """A request the fake hub received."""

    method: str
    path: str
    range: str | None
    authorization: str | None = None


@dataclass
class FakeHub:
    """Serves registered files under ``/{repo}/resolve/{revision}/{file}``."""

    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        repo: str,
        filename: str,
        path: Path,
        *,
        sha256: str | None = None,
        rate: float | None = None,
        cut_after: int | None = None,
    ) -> HubFile:
        """Serve ``path`` as ``filename`` of ``repo``; returns its record."""
        entry = HubFile(
            path=path,
            size=path.stat().st_size,
            sha256=sha256 or file_sha256(path),
            rate=rate,
            cut_after=cut_after,
        )
        self.files[(repo, filename)] = entry
        return entry

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def gets(self, filename: str) -> list[Seen]:
        """The GET requests for ``filename``."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]

    def record(self, seen: Seen) -> None:
        """Remember a request (thread-safe)."""
        with self._lock:
            self.requests.append(seen)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        self.fake.record(
            Seen(
                self.command,
                self.path,
                self.headers.get("Range"),
                self.headers.get("Authorization"),
            )
        )
        match = _RESOLVE.match(self.path.split("?", 1)[0])
        entry = self.fake.files.get((match["repo"], match["file"])) if match else None
        if entry is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        wanted = self.headers.get("Range")
        if body and wanted and (found := _RANGE.match(wanted)):
            start = int(found.group(1))
        length = entry.size - start
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.sha256}"')
        self.send_header("X-Repo-Commit", COMMIT)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{entry.size - 1}/{entry.size}")
        self.end_headers()
        if not body:
            return
        entry.gets += 1
        cut = entry.cut_after if entry.gets == 1 else None
        self._send_body(entry, start, cut)

    def _send_body(self, entry: HubFile, start: int, cut: int | None) -> None:
        sent = 0
        began = time.monotonic()
        with entry.path.open("rb") as fh:
            fh.seek(start)
            while chunk := fh.read(CHUNK):
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[: cut - sent])
                    self.wfile.flush()
                    # Drop the connection mid-body, as a failing network would.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                if entry.rate:
                    ahead = sent / entry.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
