"""A model over llama.cpp's RPC workers, on loopback, with the real server and model: two
``rpc-worker`` processes, layers split over them, greedy tokens equal to a CPU-only
server's; a worker killed mid-generation ends the request with a clear error, the server
stays up and loads the model again once the worker is back; an unreachable worker is a
clear error at start, not a crash.

Needs the RPC backend: built into llama-cpp-python, or built by scripts/build_rpc.sh
(scripts/test.sh runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from it_support import REPO_ROOT, free_port, start_server

PROMPTS = ("The capital of France is", "def fibonacci(n):", "Once upon a time, a fox")
N_CTX = "1024"


def _backend_ready() -> None:
    import ctypes

    import llama_cpp

    from locallab_cpp.engine.llama import rpc

    find = llama_cpp.llama_cpp._lib.ggml_backend_reg_by_name
    find.argtypes, find.restype = [ctypes.c_char_p], ctypes.c_void_p
    path = rpc.default_plugin_path()
    assert find(b"RPC") or path.is_file(), (
        f"no RPC backend: {path} is missing; run scripts/build_rpc.sh (scripts/test.sh does)"
    )


class Worker:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "locallab_cpp", "rpc-worker", "--port", str(self.port),
                 "--threads", "1"],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "listening" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "rpc-worker did not start"
            time.sleep(0.2)
        time.sleep(0.5)  # its socket is bound just after the line is printed

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    _backend_ready()
    folder = tmp_path_factory.mktemp("rpc")
    pair = [Worker(free_port(), folder / f"worker{i}.log") for i in range(2)]
    for w in pair:
        w.start()
    yield pair
    for w in pair:
        w.kill()


def _greedy(client: httpx.Client, prompt: str, n: int = 24) -> str:
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": n, "temperature": 0},
                    timeout=300)  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def test_layers_split_over_two_workers_give_the_cpu_tokens(workers: list[Worker]) -> None:
    # Workers keep weights in plain CPU buffers (no repacking): so does the reference.
    cpu = start_server("--n-ctx", N_CTX, "--parallel", "1", "--repack", "off")
    try:
        with cpu.client() as c:
            expected = [_greedy(c, p) for p in PROMPTS]
    finally:
        cpu.assert_clean_shutdown()
    endpoints = ",".join(f"127.0.0.1:{w.port}" for w in workers)
    server = start_server("--n-ctx", N_CTX, "--parallel", "1", "--rpc", endpoints)
    try:
        with server.client() as c:
            assert [_greedy(c, p) for p in PROMPTS] == expected
            placed = c.get("/system/info").json()["active_model"]["rpc"]
        assert placed["workers"] == endpoints.split(",")
        assert [d["description"] for d in placed["devices"]] == endpoints.split(",")
        layers = placed["layers"]
        assert len(layers) == 2, layers  # both workers hold layers, none stayed here
        assert set(layers) == {d["name"] for d in placed["devices"]}
    finally:
        server.assert_clean_shutdown()


def test_a_worker_killed_mid_generation_ends_the_request_and_the_model_reloads(
    workers: list[Worker],
) -> None:
    endpoints = ",".join(f"127.0.0.1:{w.port}" for w in workers)
    server = start_server("--n-ctx", N_CTX, "--parallel", "1", "--rpc", endpoints)
    try:
        events: list[dict] = []
        body = {"prompt": "Once upon a time", "max_tokens": 800, "temperature": 0,
                "stream": True}  # fmt: skip
        with (
            httpx.Client(base_url=server.base_url, timeout=120) as http,
            http.stream("POST", "/v1/completions", json=body) as reply,
        ):
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                events.append(json.loads(line[5:]))
                if len(events) == 5:
                    workers[1].kill()
        errors = [e["error"] for e in events if "error" in e]
        assert errors, f"the stream ended without an error: {events[-2:]}"
        assert "RPC worker" in errors[0]["message"] and "Start" in errors[0]["message"]
        assert server.alive()
        with server.client() as c:
            health = c.get("/health", timeout=5).json()
            assert health["status"] == "degraded" and health["model_loaded"] is False
            workers[1].start()
            text = _greedy(c, PROMPTS[0], 8)  # loads the model again over the workers
            assert text
            assert c.get("/health").json()["status"] == "healthy"
        assert "left in memory" in server.output()
    finally:
        server.stop()
    assert server.exit_code is not None, "the server did not exit on SIGTERM"


def test_an_unreachable_worker_is_a_clear_error_not_a_crash() -> None:
    dead = free_port()
    server = start_server("--n-ctx", N_CTX, "--rpc", f"127.0.0.1:{dead}", wait_for_model=False)
    try:
        with server.client() as c:
            deadline = time.monotonic() + 60
            while f"127.0.0.1:{dead} cannot be reached" not in server.output():
                assert time.monotonic() < deadline, server.output()[-2000:]
                time.sleep(0.3)
            assert c.get("/health").json()["model_loaded"] is False
            r = c.post("/models/load", json={"model_id": "gemma-3-270m"}, timeout=60)
            assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
            assert "rpc-worker" in r.text
        assert server.alive()
    finally:
        server.assert_clean_shutdown()
