"""The rpc phase (issue 23): the embedded model over two loopback RPC workers against the
same server on its own CPU.

Three servers one after the other, 1 slot of 1024 tokens, 1 llama.cpp thread each
(workers too): CPU-only with repacking (the default), CPU-only without it (what the
workers hold), and over two ``rpc-worker`` processes on this machine. For each: seconds
from the process start to a loaded model, and a greedy stream of 128 tokens (the decode
rate after the first token), median of a few rounds. On one machine the workers share its
cores and every step crosses loopback twice, so this shows what RPC costs, not what
another machine's memory or GPU would give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import httpx

from bench.config import REPO_ROOT, machine_line
from bench.processes import ChildProcess, free_port

TOKENS = 128
PROMPT = "Write a long story about a lighthouse keeper and the sea."


class Server(ChildProcess):
    name = "ours"

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


def _decode_rate(url: str) -> float:
    body = {"prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "stream": True,
            "logit_bias": {"1": -100}}  # fmt: skip
    times: list[float] = []
    with (
        httpx.Client(base_url=url, timeout=600) as http,
        http.stream("POST", "/v1/completions", json=body) as reply,
    ):
        for line in reply.iter_lines():
            if not line.startswith("data:") or "[DONE]" in line:
                continue
            if any(c.get("text") for c in json.loads(line[5:]).get("choices") or ()):
                times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def _measure(extra: list[str], rounds: int, timeout: float) -> tuple[float, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "locallab_cpp", "serve", "--port", str(port), "--threads", "1",
           "--parallel", "1", "--n-ctx", "1024", "--rate-limit", "0", "--log-level", "warning",
           *extra]  # fmt: skip
    t0 = time.perf_counter()
    with Server(cmd, port, cwd=REPO_ROOT) as server:
        server.wait_ready(timeout)
        ready = time.perf_counter() - t0
        _decode_rate(server.url)  # warm-up
        rates = [_decode_rate(server.url) for _ in range(rounds)]
    return ready, statistics.median(rates)


def main(args: argparse.Namespace) -> int:
    rounds = args.rounds or (1 if args.quick else 3)
    ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locallab_cpp",
                "rpc-worker",
                "--port",
                str(p),
                "--threads",
                "1",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        time.sleep(3)
        rows = [
            ("CPU, repacked weights (default)", _measure([], rounds, args.server_timeout)),
            ("CPU, plain weights (--repack off)",
             _measure(["--repack", "off"], rounds, args.server_timeout)),
            ("two loopback RPC workers", _measure(
                ["--rpc", ",".join(f"127.0.0.1:{p}" for p in ports)], rounds,
                args.server_timeout)),
        ]  # fmt: skip
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Run {when}: `python scripts/bench.py {' '.join(sys.argv[1:])}`; {machine_line(1)}; "
        f"1 slot, 1 thread per server and per worker, a greedy stream of {TOKENS} tokens, "
        f"median of {rounds}.",
        "",
        "| Setup | Ready after (s) | Decode (tok/s) |",
        "|---|---:|---:|",
        *(f"| {name} | {ready:.1f} | {rate:.1f} |" for name, (ready, rate) in rows),
    ]
    print("\n".join(lines))
    return 0
