"""The fleet phase (issue 23): our servers behind LiteLLM's proxy, least-busy.

Three set-ups, all up at once so that their rounds can take turns (a shared machine's
noise then falls on all three alike):

- direct: one server (``--threads T --parallel P``, the command line's), clients talk to it;
- proxied: the same server through a LiteLLM proxy of its own;
- fleet: two servers (``--threads T/2 --parallel P/2`` each: the same cores and slots in
  all) behind one LiteLLM proxy, routing least-busy.

Each round, CLIENTS clients in a closed loop (each sends its next request when the last is
answered) send REQUESTS_PER_CLIENT chat completions each: fixed short prompts, greedy,
max_tokens 64. Reported per set-up: generated tokens/s over the round (the usage's
completion tokens / the round's wall time, median of the rounds), the median request
latency, and for the fleet how many requests each server counted in its /metrics. The
proxy's own cost is also measured alone: sequential one-token requests, direct and proxied.

LiteLLM runs from .venv-litellm (scripts/test.sh installs it), offline: its bundled data
files, no telemetry, no database, a random master key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.config import REPO_ROOT, BenchError, machine_info, markers, write_marked
from bench.processes import ChildProcess, free_port
from bench.workloads import OPENERS

MODEL = "gemma-3-270m"
CLIENTS = 16
REQUESTS_PER_CLIENT = 3
MAX_TOKENS = 64
# Clients start this far apart: LiteLLM's least-busy sends requests that arrive in the same
# instant all to the first deployment (it counts a request in flight only after routing it).
STAGGER_S = 0.02
OVERHEAD_REQUESTS = 12
LITELLM = REPO_ROOT / ".venv-litellm" / "bin" / "litellm"
SECTION = "fleet"
START, END = markers(SECTION)
PROMPTS = [f"Continue this text in plain words: {opener}" for opener in OPENERS]


class Ours(ChildProcess):
    name = "ours"

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


class LiteLLM(ChildProcess):
    name = "litellm"

    def is_ready(self, client: httpx.Client) -> bool:
        return client.get("/health/liveliness").status_code == 200


@dataclass
class Round:
    """One round of one set-up."""

    wall_s: float
    tokens: int
    latencies: list[float] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.tokens / self.wall_s


def _ours(threads: int, parallel: int, extra: list[str]) -> Ours:
    port = free_port()
    cmd = [
        sys.executable, "-m", "locallab_cpp", "serve", "--port", str(port),
        "--threads", str(threads), "--parallel", str(parallel), "--n-ctx", "1024",
        "--metrics", "--rate-limit", "0", "--log-level", "warning", *extra,
    ]  # fmt: skip
    # Passive OpenMP waits: on a shared small machine a spinning barrier of the two-thread
    # server stalls it for minutes whenever another process holds a core (seen: 8 tok/s
    # instead of 100). The same setting for all three set-ups keeps them comparable.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return Ours(cmd, port, cwd=REPO_ROOT, env=env)


def _litellm(ports: list[int], key: str, folder: Path) -> LiteLLM:
    """A proxy with one deployment per server under one model name, least-busy."""
    lines = ["model_list:"]
    for p in ports:
        lines += [f"  - model_name: {MODEL}", "    litellm_params:",
                  f"      model: openai/{MODEL}", f"      api_base: http://127.0.0.1:{p}/v1",
                  "      api_key: dummy"]  # fmt: skip
    lines += ["router_settings:", "  routing_strategy: least-busy", ""]
    config = folder / f"litellm-{'-'.join(map(str, ports))}.yaml"
    config.write_text("\n".join(lines), encoding="utf-8")
    port = free_port()
    offline = {f"LITELLM_LOCAL_{name}": "True" for name in (
        "MODEL_COST_MAP", "ANTHROPIC_BETA_HEADERS", "AUTOROUTER_PRESETS", "BLOG_POSTS",
        "POLICY_TEMPLATES")}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(offline, LITELLM_MASTER_KEY=key, LITELLM_TELEMETRY="False")
    cmd = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--telemetry", "False"]  # fmt: skip
    return LiteLLM(cmd, port, env=env)


async def _request(http: httpx.AsyncClient, prompt: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
    t0 = time.perf_counter()
    reply = await http.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - t0
    if reply.status_code != 200:
        raise BenchError(f"chat completion: {reply.status_code} {reply.text[:300]}")
    data = reply.json()
    if not data["choices"][0]["message"].get("content"):
        raise BenchError(f"empty answer: {data}")
    return elapsed, int(data["usage"]["completion_tokens"])


async def _round(url: str, key: str) -> Round:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as h:

        async def client(i: int) -> list[tuple[float, int]]:
            await asyncio.sleep(i * STAGGER_S)
            return [await _request(h, PROMPTS[(i + j) % len(PROMPTS)], MAX_TOKENS)
                    for j in range(REQUESTS_PER_CLIENT)]  # fmt: skip

        t0 = time.perf_counter()
        done = await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        wall = time.perf_counter() - t0
    results = [r for per_client in done for r in per_client]
    return Round(wall, sum(t for _, t in results), [lat for lat, _ in results])


async def _sequential(url: str, key: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as h:
        return [(await _request(h, PROMPTS[i % len(PROMPTS)], 1))[0] for i in range(n)]


def _openai_200s(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = {"api": "openai", "status": "200"}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "locallab_requests_total" and s.labels == wanted:
                return s.value
    return 0.0


def main(args: argparse.Namespace) -> int:
    if not LITELLM.exists():
        raise BenchError(f"{LITELLM} is missing: run scripts/test.sh (it installs LiteLLM)")
    rounds = args.rounds or (1 if args.quick else 3)
    extra = args.server_args.split()
    half_threads, half_parallel = max(1, args.threads // 2), max(1, args.parallel // 2)
    key = "sk-" + secrets.token_hex(16)
    results: dict[str, list[Round]] = {"direct": [], "proxied": [], "fleet": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        one = stack.enter_context(_ours(args.threads, args.parallel, extra))
        pair = [stack.enter_context(_ours(half_threads, half_parallel, extra)) for _ in range(2)]
        for srv in (one, *pair):
            srv.wait_ready(args.server_timeout)
        proxy_one = stack.enter_context(_litellm([one.port], key, Path(tmp)))
        proxy_pair = stack.enter_context(_litellm([s.port for s in pair], key, Path(tmp)))
        for proxy in (proxy_one, proxy_pair):
            proxy.wait_ready(args.server_timeout)
        urls = {"direct": one.url, "proxied": proxy_one.url, "fleet": proxy_pair.url}
        for url in urls.values():  # warm-up: first requests, connections, the proxies' imports
            asyncio.run(_sequential(url, key, 3))
        counted = [_openai_200s(s.url) for s in pair]
        for r in range(rounds):
            names = list(urls)
            names = names[r % 3 :] + names[: r % 3]
            for name in names:
                got = asyncio.run(_round(urls[name], key))
                results[name].append(got)
                print(f"[fleet] round {r + 1} {name}: {got.tps:.1f} tok/s, latency p50 "
                      f"{statistics.median(got.latencies):.2f} s", flush=True)  # fmt: skip
        shares = [int(_openai_200s(s.url) - c) for s, c in zip(pair, counted, strict=True)]
        direct_1 = asyncio.run(_sequential(one.url, key, OVERHEAD_REQUESTS))
        proxied_1 = asyncio.run(_sequential(proxy_one.url, key, OVERHEAD_REQUESTS))
    text = _render(args, results, shares, direct_1, proxied_1, half_threads, half_parallel)
    print(text)
    if args.markdown is not None:
        write_marked(args.markdown, SECTION, text)
        print(f"wrote {args.markdown}")
    return 0


def _render(args: argparse.Namespace, results: dict[str, list[Round]], shares: list[int],
            direct_1: list[float], proxied_1: list[float], half_threads: int,
            half_parallel: int) -> str:  # fmt: skip
    tps = {k: statistics.median(r.tps for r in v) for k, v in results.items()}
    lat = {k: statistics.median(x for r in v for x in r.latencies) for k, v in results.items()}
    machine = machine_info(args.threads)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    d1, p1 = statistics.median(direct_1), statistics.median(proxied_1)
    rows = [
        ("(i) one server, direct", f"--threads {args.threads} --parallel {args.parallel}",
         "direct"),
        ("(ii) the same server through LiteLLM", "as (i)", "proxied"),
        ("(iii) two servers behind LiteLLM, least-busy",
         f"--threads {half_threads} --parallel {half_parallel} each", "fleet"),
    ]  # fmt: skip
    lines = [
        f"Run {when}: `{command.strip()}`; {machine['CPU']}, {machine['Cores']}; "
        f"llama-cpp-python {machine['llama-cpp-python']}; LiteLLM from "
        f"tests/litellm-requirements.txt. {CLIENTS} clients in a closed loop, "
        f"{REQUESTS_PER_CLIENT} chat completions each a round (fixed short prompts, greedy, "
        f"max_tokens {MAX_TOKENS}), medians of {len(results['direct'])} rounds, the three "
        "set-ups taking turns; the servers ran with OMP_WAIT_POLICY=PASSIVE.",
        "",
        "| Set-up | Servers | Generated tok/s | Request latency (s, median) |",
        "|---|---|---:|---:|",
        *(f"| {label} | {servers} | {tps[k]:.1f} | {lat[k]:.2f} |" for label, servers, k in rows),
        "",
        f"- LiteLLM's cost under load, (ii) against (i): {tps['proxied'] / tps['direct']:.3f}x "
        f"the tokens/s, {lat['proxied'] / lat['direct']:.3f}x the median latency.",
        f"- LiteLLM's cost per request, one-token requests one after another "
        f"({OVERHEAD_REQUESTS} each): {d1 * 1000:.0f} ms direct, {p1 * 1000:.0f} ms through "
        f"the proxy (+{(p1 - d1) * 1000:.0f} ms).",
        f"- (iii)'s requests per server, from each server's /metrics: {shares[0]} and {shares[1]}.",
    ]
    return "\n".join(lines) + "\n"
