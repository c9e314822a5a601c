"""Support code of the end-to-end tests: start real servers, check responses, parse SSE.

``start_server(*flags)`` starts ``python -m locallab_cpp serve`` on a free port with extra
flags and waits until it serves. The response checks enforce decisions.md's error rules on
every error any test sees: never a 500, always ``{"detail": str}``, never a traceback or a
file-system path.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 15.0
HTTP_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
DEFAULT_THREADS = "1"

# What must never appear in a response meant for a client.
LEAK_PATTERNS = (
    "Traceback",
    'File "',
    "site-packages",
    "/root",
    "/home",
    "/work/",
    "/tmp/",
    "/usr/",
    "/etc/passwd",
)

# A prompt this model continues for as long as it is allowed to (greedy counting).
ENDLESS_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
ENDLESS_PARAMS: dict[str, Any] = {"do_sample": False, "repetition_penalty": 1.0}

_LIVE_PROCESSES: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies, so no server outlives an aborted run."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    """A running ``python -m locallab_cpp serve``."""

    proc: subprocess.Popen[bytes]
    port: int
    args: list[str]
    log_path: Path
    exit_code: int | None = None
    _output: str = "<no output>"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        with contextlib.suppress(OSError):
            self._output = self.log_path.read_text(encoding="utf-8", errors="replace")
        return self._output

    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self, **kwargs: Any) -> httpx.Client:
        return checked_client(self.base_url, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return checked_async_client(self.base_url, **kwargs)

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout``; return the exit status (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.exit_code = None
        else:
            self.exit_code = self.proc.returncode
        with contextlib.suppress(ValueError):
            _LIVE_PROCESSES.remove(self.proc)
        return self.exit_code

    def shutdown_problem(self) -> str | None:
        """SIGTERM the server; None if it shut down cleanly, else what went wrong.

        Clean means: it exited within SHUTDOWN_TIMEOUT_S, ran its lifespan shutdown (uvicorn
        logged "Application shutdown complete" and "Finished server process") and its exit
        status is 0.
        """
        code = self.stop()
        output = self.output()
        graceful = "Application shutdown complete" in output and "Finished server process" in output
        if code == 0 and graceful:
            self.log_path.unlink(missing_ok=True)  # kept only when something went wrong
            return None
        return (
            f"server {self.args} did not shut down cleanly on SIGTERM within "
            f"{SHUTDOWN_TIMEOUT_S}s (exit status {code}, graceful={graceful}); "
            f"output:\n{output[-4000:]}"
        )

    def assert_clean_shutdown(self) -> None:
        problem = self.shutdown_problem()
        assert problem is None, problem


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of a process's resident memory (VmHWM: psutil reports
    only the current figure)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def _kill_leftovers() -> None:
    for proc in list(_LIVE_PROCESSES):
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_leftovers)


def start_server(
    *flags: str,
    env: dict[str, str] | None = None,
    wait_for_model: bool | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
) -> ServerProcess:
    """Start a server with extra ``serve`` flags on a free port and wait until it serves.

    ``--rate-limit 0`` is passed unless ``flags`` set a rate limit. The server is ready when
    GET /health answers, and (unless ``--no-model`` is among the flags or ``wait_for_model``
    is False) reports ``model_loaded: true``.
    """
    flag_list = list(flags)
    if "--rate-limit" not in flag_list:
        flag_list += ["--rate-limit", "0"]
    if "--threads" not in flag_list and not os.environ.get("LOCALLAB_THREADS"):
        # One llama.cpp thread per server: on a small shared machine, OpenMP's spinning
        # barriers slow a multi-threaded server down by 10-100x when other processes compete
        # for the cores. Set LOCALLAB_THREADS (or pass --threads) to test another count.
        flag_list += ["--threads", DEFAULT_THREADS]
    if wait_for_model is None:
        wait_for_model = "--no-model" not in flag_list
    for _attempt in range(3):
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "locallab_cpp",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flag_list,
        ]
        fd, log_name = tempfile.mkstemp(prefix=f"locallab-it-{port}-", suffix=".log")
        log_path = Path(log_name)
        child_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # Each server's prompt cache writes to a folder of its own: a test's prompts are
            # never restored by another test's server (pass the same --prompt-cache-dir to
            # two servers to test a restart).
            "LOCALLAB_PROMPT_CACHE_DIR": tempfile.mkdtemp(prefix="locallab-it-prompts-"),
            **(env or {}),
        }
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                preexec_fn=_die_with_parent,
            )
        _LIVE_PROCESSES.append(proc)
        server = ServerProcess(proc=proc, port=port, args=args, log_path=log_path)
        if _wait_ready(server, wait_for_model, timeout):
            return server
        # It died: retry only if another process grabbed the port in between.
        if "address already in use" not in server.output().lower():
            break
    server.stop(timeout=5)
    pytest.fail(
        f"server {args} did not become ready (exit status {server.proc.returncode}); "
        f"output:\n{server.output()[-6000:]}"
    )


def _wait_ready(server: ServerProcess, wait_for_model: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                return False
            try:
                r = client.get(server.base_url + "/health")
                if r.status_code == 200 and (not wait_for_model or r.json()["model_loaded"]):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.stop(timeout=5)
    pytest.fail(
        f"server {server.args} not ready within {timeout}s; output:\n{server.output()[-6000:]}"
    )


# --------------------------------------------------------------------------- response checks


def assert_no_leak(text: str) -> None:
    """No traceback, no file-system path."""
    for pattern in LEAK_PATTERNS:
        assert pattern not in text, f"response leaks {pattern!r}: {text[:500]!r}"


def check_error_response(r: httpx.Response) -> None:
    """Applied to every response with status >= 400 (body already read)."""
    assert r.status_code != 500, f"{r.request.method} {r.request.url} gave 500: {r.text[:500]!r}"
    assert r.status_code < 500 or r.status_code == 503, f"unexpected {r.status_code}: {r.text!r}"
    assert_no_leak(r.text)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, f"error body {body!r}"
    assert isinstance(body["detail"], str) and body["detail"].strip(), f"empty detail: {body!r}"


def _sync_hook(r: httpx.Response) -> None:
    if r.status_code >= 400:
        r.read()
        check_error_response(r)


async def _async_hook(r: httpx.Response) -> None:
    if r.status_code >= 400:
        await r.aread()
        check_error_response(r)


def checked_client(base_url: str, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every error response is checked (no 500, {"detail"}, no leak)."""
    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return httpx.Client(base_url=base_url, event_hooks={"response": [_sync_hook]}, **kwargs)


def checked_async_client(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return httpx.AsyncClient(base_url=base_url, event_hooks={"response": [_async_hook]}, **kwargs)


def error_detail(r: httpx.Response, status: int) -> str:
    """Assert ``r`` is an error with ``status``; return its detail."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]!r}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip()
    assert_no_leak(detail)
    return detail


def check_usage(usage: dict[str, Any], *, max_completion: int | None = None) -> None:
    """Real token counts: prompt_tokens > 0, total = prompt + completion."""
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[key], int) and not isinstance(usage[key], bool), usage
    assert usage["prompt_tokens"] > 0, usage
    assert usage["completion_tokens"] >= 0, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage
    if max_completion is not None:
        assert usage["completion_tokens"] <= max_completion, usage


def check_generate_body(body: dict[str, Any], *, max_length: int, exact: bool = True) -> None:
    """A /generate reply. ``exact``: a "length" finish used up max_length exactly (False
    where the context may have ended the generation first)."""
    assert isinstance(body["response"], str)
    assert body["text"] == body["response"]
    assert body["model"] == "gemma-3-270m"
    assert body["finish_reason"] in ("stop", "length")
    check_usage(body["usage"], max_completion=max_length)
    if body["finish_reason"] == "length" and exact:
        assert body["usage"]["completion_tokens"] == max_length, body
    if body["usage"]["completion_tokens"] > 0:
        assert body["response"] != ""


def check_chat_body(body: dict[str, Any], *, max_length: int) -> None:
    assert isinstance(body["id"], str) and body["id"]
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert abs(body["created"] - time.time()) < 600
    assert body["model"] == "gemma-3-270m"
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    check_usage(body["usage"], max_completion=max_length)


# --------------------------------------------------------------------------- SSE


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


def parse_sse(raw: str) -> list[SSEEvent]:
    """Events of an SSE body, as the standard says: an event's ``data:`` lines are joined
    with "\\n", one space after the colon is dropped; an unfinished last event is dropped."""
    events: list[SSEEvent] = []
    data: list[str] = []
    event_type = ""
    for line in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                events.append(SSEEvent(event_type or "message", "\n".join(data)))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
    return events


def streamed_text(events: list[SSEEvent]) -> str:
    """The generated text of a finished, successful stream (asserts its framing)."""
    assert events, "no events"
    assert events[-1] == SSEEvent("message", "[DONE]"), events[-3:]
    assert sum(1 for e in events if e.data == "[DONE]") == 1
    errors = [e for e in events if e.event != "message"]
    assert not errors, f"stream carried error events: {errors}"
    return "".join(e.data for e in events[:-1])


def check_sse_response(r: httpx.Response) -> None:
    """A stream began: 200, text/event-stream, not cached."""
    assert r.status_code == 200, f"stream answered {r.status_code}"
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    assert r.headers.get("cache-control") == "no-cache", r.headers


def read_events_until(chunks: Iterator[bytes], count: int) -> tuple[bytes, list[SSEEvent]]:
    """Read raw chunks until ``count`` complete events have arrived.

    Keep a reference to ``chunks`` (``r.iter_raw()``) for as long as the stream must stay
    open: when that generator is garbage collected, httpx closes the connection.
    """
    raw = b""
    while True:
        chunk = next(chunks)
        raw += chunk
        events = parse_sse(raw.decode("utf-8", errors="replace"))
        if len(events) >= count:
            return raw, events


# Sixteen different prompts (prose, code, markup, Q&A) for the greedy alone-vs-batched
# comparisons of test_e2e_engine.py and test_engine_batching.py.
DIVERGENCE_PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "import numpy as np\n",
    "The quick brown fox",
    "In 1969, the first humans",
    "Photosynthesis is the process by which",
    "My favourite recipe for pancakes:",
    "SELECT name FROM users WHERE",
    "The theory of relativity states that",
    "Dear Sir or Madam,\n",
    "The best way to learn a language is",
    "Q: What is the largest planet?\nA:",
    "<html>\n<head>\n",
]


def open_embedded_engine(**settings: Any) -> Any:
    """The llama.cpp engine on the embedded model, in this process (two threads unless
    ``settings`` say otherwise); the caller closes it."""
    from locallab_cpp.config import load_settings
    from locallab_cpp.engine.llama.engine import open_llama_engine
    from locallab_cpp.models.registry import Registry

    registry = Registry.load(None)
    spec = registry.get(registry.default_id)
    # The prompt cache stays in memory unless a test gives it a folder: the user's cache
    # folder is no place for a test's prompts, nor for another test to restore them from.
    defaults = {"threads": 2, "prompt_cache_disk": 0}
    merged = load_settings({**defaults, **settings}, env={})
    return open_llama_engine(spec, registry.ensure_local(spec), merged)


# --------------------------------------------------------------------------- npm-pinned CLIs

NODE_DIR = REPO_ROOT / "tests" / "node"
"""The Node tools of the end-to-end tests, pinned by its package-lock.json."""
NPM_TIMEOUT_S = 300


def pinned_node_version(package: str) -> str:
    """The version of ``package`` that tests/node/package-lock.json pins."""
    import json

    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    return str(lock["packages"][f"node_modules/{package}"]["version"])


def _working_cli(candidates: Sequence[Path], version: str) -> Path | None:
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        try:
            done = subprocess.run(
                [str(path), "--version"],
                capture_output=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and version in done.stdout.decode(errors="replace").split():
            return path
    return None


def node_cli(package: str, candidates: Callable[[], Sequence[Path]]) -> Path:
    """The pinned CLI of ``package`` (the first of ``candidates`` whose ``--version`` names
    the pinned version), installed with ``npm ci --prefix tests/node`` when missing. A CLI
    that cannot be installed or run fails the test, never skips it."""
    version = pinned_node_version(package)
    cli = _working_cli(candidates(), version)
    if cli is not None:
        return cli
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is not on PATH: cannot install {package}@{version} into tests/node")
    done = subprocess.run(
        [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        pytest.fail(f"npm ci --prefix tests/node failed:\n{output[-4000:]}")
    cli = _working_cli(candidates(), version)
    if cli is None:
        pytest.fail(f"{package}@{version} installed but its `--version` fails")
    return cli
