"""Servers under test as subprocesses, and the peak-RSS sampler."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import psutil

from bench.config import BenchError, Config

# ----- phase 2: the server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ChildProcess:
    """A server under test as a subprocess, its output kept in a temporary file; a context
    manager that stops it. Subclasses say what "ready" means (:meth:`is_ready`)."""

    name = "server"

    def __init__(
        self, cmd: list[str], port: int, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.cmd = cmd
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._cwd = cwd
        self._env = env
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed in __exit__)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log(self) -> str:
        """Everything the process wrote so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")

    def log_tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    def is_ready(self, client: httpx.Client) -> bool:
        """Whether the server is ready for the benchmark (it may still be loading)."""
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        """Block until :meth:`is_ready`; BenchError if the process exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if self.is_ready(client):
                        return
                time.sleep(0.2)
        raise BenchError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")


class ServerProcess(ChildProcess):
    """``python -m locallab_cpp serve`` as a subprocess."""

    def __init__(self, cfg: Config, port: int, repo_root: Path) -> None:
        cmd = [
            sys.executable, "-m", "locallab_cpp", "serve",
            "--port", str(port),
            "--threads", str(cfg.threads),
            "--parallel", str(cfg.parallel),
            "--rate-limit", "0",
            "--repack", cfg.repack,
            "--log-level", "warning",
            *cfg.server_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p
        )
        super().__init__(cmd, port, cwd=repo_root, env=env)

    def is_ready(self, client: httpx.Client) -> bool:
        """/health says the model is loaded."""
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


class PeakRss(threading.Thread):
    """Samples a process's resident memory and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = 0
        self.samples = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop_event.wait(self._interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=2)
        return self.peak
