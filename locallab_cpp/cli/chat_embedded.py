"""``chat --embedded``: a server of the chat's own, started as a child process.

The child is ``python -m locallab_cpp serve`` on a free loopback port, in a session of its
own so that Ctrl-C at the terminal reaches the chat (which stops an answer) and not the
server. Its output goes to a temporary log, shown only when it fails to start; the chat
stops it with SIGTERM (the server's clean shutdown) when it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from locallab_cpp.cli.chat_client import ChatError

STARTUP_TIMEOUT_S = 600.0
"""Loading a model on a slow disk, or building its memory plan, can take minutes."""
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A ``serve`` child process; :meth:`start` waits until its model is loaded."""

    def __init__(self, model: str | None, serve_flags: list[str]) -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "locallab_cpp",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--model", model] if model else []),
            *serve_flags,
        ]
        fd, name = tempfile.mkstemp(prefix="locallab-chat-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The child's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the child and wait until ``/health`` says its model is loaded; raises
        :class:`ChatError` (with the end of its log) if it exits or takes too long."""
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise ChatError(
                        f"the embedded server exited with status {self._proc.returncode}:\n"
                        + self._log_tail()
                    )
                with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                    r = client.get(self.url + "/health")
                    if r.status_code == 200 and r.json()["model_loaded"]:
                        return
                time.sleep(0.25)
        self.stop()
        raise ChatError(f"the embedded server did not load its model in {timeout:.0f} s.")

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return "(no output)"

    def stop(self) -> int | None:
        """SIGTERM the child and wait for it (killing it after STOP_TIMEOUT_S); returns its
        exit status, None if it had to be killed. The log is removed after a clean exit."""
        proc = self._proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                code = proc.returncode
        if code == 0 or proc is None:
            self.log_path.unlink(missing_ok=True)
        return code
