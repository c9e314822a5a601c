"""Phase 2: our server over HTTP, rounds interleaved with the in-process ceiling."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.ceiling import Ceiling, InProcess, TokenRun, ceiling_figures
from bench.client import Client, Counters, StreamClient, StreamResult
from bench.config import (
    BATCH_SIZE,
    CONCURRENCY_LEVELS,
    KV_INFO_KEYS,
    PROMPT_RUNS_PER_ROUND,
    BenchError,
    Config,
    greedy,
    median,
    percentile,
    ratio,
    tag,
)
from bench.processes import PeakRss, ServerProcess, free_port
from bench.workloads import chat_conversation, long_prompt, short_prompt


@dataclass
class ServerFigures:
    """Phase 2 results."""

    decode_tps: float = math.nan
    ttft_s: float = math.nan
    single_tokens: list[int] = field(default_factory=list)
    events_match_tokens: bool | None = None
    pp_tps: float = math.nan
    pp_prompt_tokens: int = 0
    pp_cached_tokens: int = 0
    aggregate: dict[int, float] = field(default_factory=dict)
    ttft_p50: dict[int, float] = field(default_factory=dict)
    ttft_p95: dict[int, float] = field(default_factory=dict)
    agg_tokens: dict[int, int] = field(default_factory=dict)
    seq_wall: float = math.nan
    batch_wall: float = math.nan
    seq_tokens: int = 0
    batch_tokens: int = 0
    warm_ttft: float = math.nan
    cold_ttft: float = math.nan
    warm_cached: int = 0
    warm_prompt: int = 0
    cold_cached: int = 0
    kv_bytes_reported: int | None = None
    """KV cache bytes as /system/info reports them, where it does."""
    active_model: dict[str, Any] = field(default_factory=dict)
    """/system/info's active_model at the start (the llama-server phase mirrors it)."""
    peak_rss: int = 0
    rss_samples: int = 0
    model_size: int = 0
    n_ctx: int = 0
    parallel: int = 0
    model_id: str = ""
    notes: list[str] = field(default_factory=list)


async def _concurrent(
    client: Client, cfg: Config, n_clients: int
) -> tuple[list[StreamResult], Counters, float]:
    before = await client.counters()
    results = await asyncio.gather(
        *(
            client.stream("/generate", {"prompt": short_prompt(i), **greedy(cfg.max_tokens)})
            for i in range(n_clients)
        )
    )
    after = await client.counters()
    start = min(r.t_sent for r in results)
    end = max(r.t_done for r in results)
    return list(results), after - before, end - start


async def server_phase(
    server: ServerProcess, cfg: Config, inproc: InProcess, out: ServerFigures
) -> Ceiling:
    """Every HTTP measurement, in order; returns the in-process figures taken between them."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    streams = StreamClient("127.0.0.1", server.port)
    async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as http:
        client = Client(http, streams)
        try:
            await _describe_server(client, cfg, out)
            await _warm_up(client, inproc)
            ceiling = await _interleaved(client, cfg, inproc, out)
            inproc.close()  # not needed any more: give its memory back
            await _batch_vs_one_by_one(client, cfg, out)
            await _follow_up_turn(client, cfg, inproc.system_body, out)
        finally:
            streams.close()
    return ceiling


async def _describe_server(client: Client, cfg: Config, out: ServerFigures) -> None:
    current = await client.get_json("/models/current")
    out.model_id = str(current.get("model_id", ""))
    out.model_size = int(current.get("size_bytes", 0))
    out.n_ctx = int(current.get("n_ctx", 0))
    out.parallel = int(current.get("parallel", 0))
    if out.parallel != cfg.parallel:
        out.notes.append(f"server reports {out.parallel} slots, {cfg.parallel} asked")
    # The first /system/info call runs py-cpuinfo: keep it out of the measurements.
    info = await client.get_json("/system/info")
    model_info = info.get("active_model") or {}
    out.active_model = dict(model_info)
    for key in KV_INFO_KEYS:
        if isinstance(model_info.get(key), int):
            out.kv_bytes_reported = int(model_info[key])
            break
    await client.counters()
    if not client.has_counters:
        out.notes.append(
            "/system/info has no token counters: streamed token counts fall back to "
            "SSE event counts (approximate)"
        )


async def _warm_up(client: Client, inproc: InProcess) -> None:
    """Open 8 keep-alive connections, exercise batched decode and a long prefill."""
    await asyncio.gather(
        *(
            client.stream("/generate", {"prompt": short_prompt(i), **greedy(4)})
            for i in range(max(CONCURRENCY_LEVELS))
        )
    )
    await client.post_json("/generate", {"prompt": long_prompt(inproc.long_body), **greedy(1)})


async def _interleaved(
    client: Client, cfg: Config, inproc: InProcess, out: ServerFigures
) -> Ceiling:
    """Rounds of: in-process decode, 1 client, in-process prompt, server prompt, 4 and 8
    clients. Every ratio is of medians over the same rounds, so a machine that speeds up or
    slows down during the run moves both sides of it."""
    ceil_decode: list[TokenRun] = []
    ceil_pp: list[TokenRun] = []
    single_rates: list[float] = []
    single_ttfts: list[float] = []
    pp_rates: list[float] = []
    rates: dict[int, list[float]] = {n: [] for n in CONCURRENCY_LEVELS}
    ttfts: dict[int, list[float]] = {n: [] for n in CONCURRENCY_LEVELS}
    mismatches = 0
    for _ in range(cfg.rounds):
        for n_clients in CONCURRENCY_LEVELS:
            if n_clients == 1:
                ceil_decode.append(inproc.decode_run())
            results, delta, wall = await _concurrent(client, cfg, n_clients)
            events = sum(r.events for r in results)
            tokens = delta.generated if client.has_counters else events
            out.agg_tokens[n_clients] = out.agg_tokens.get(n_clients, 0) + tokens
            rates[n_clients].append(tokens / wall if wall > 0 else math.nan)
            ttfts[n_clients].extend(r.ttft for r in results)
            if client.has_counters and events != tokens:
                mismatches += 1
            if n_clients == 1:
                r = results[0]
                out.single_tokens.append(tokens)
                single_ttfts.append(r.ttft)
                if tokens >= 2 and r.t_first is not None and r.t_last is not None:
                    span = r.t_last - r.t_first
                    single_rates.append((tokens - 1) / span if span > 0 else math.nan)
                # Prompt processing of the long prompt (non-streamed, one new token). One
                # sample of ~0.7 s varies by about 5%, so each round takes several, and the
                # two sides take turns going first.
                for k in range(PROMPT_RUNS_PER_ROUND):
                    if k % 2:
                        pp_rates.append(await _prompt_rate(client, inproc, out))
                        ceil_pp.append(inproc.prompt_run())
                    else:
                        ceil_pp.append(inproc.prompt_run())
                        pp_rates.append(await _prompt_rate(client, inproc, out))
    for n_clients in CONCURRENCY_LEVELS:
        out.aggregate[n_clients] = median(rates[n_clients])
        out.ttft_p50[n_clients] = percentile(ttfts[n_clients], 50)
        out.ttft_p95[n_clients] = percentile(ttfts[n_clients], 95)
    out.decode_tps = median(single_rates)
    out.ttft_s = median(single_ttfts)
    out.pp_tps = median(pp_rates)
    if client.has_counters:
        out.events_match_tokens = mismatches == 0
    spreads = []
    for n_clients in CONCURRENCY_LEVELS[1:]:
        per_round = [ratio(a, b) for a, b in zip(rates[n_clients], rates[1], strict=True)]
        spreads.append(f"{n_clients} clients vs 1 {min(per_round):.2f}-{max(per_round):.2f}x")
    out.notes.append("Per-round ratios (same round's runs): " + ", ".join(spreads) + ".")
    if out.single_tokens and min(out.single_tokens) < cfg.max_tokens // 2:
        out.notes.append(
            f"single-stream runs ended early (tokens {out.single_tokens} of "
            f"{cfg.max_tokens}): decode rate rests on fewer tokens"
        )
    return ceiling_figures(inproc, ceil_decode, ceil_pp)


async def _prompt_rate(client: Client, inproc: InProcess, out: ServerFigures) -> float:
    t0 = time.perf_counter()
    reply = await client.post_json(
        "/generate", {"prompt": long_prompt(inproc.long_body), **greedy(1)}
    )
    latency = time.perf_counter() - t0
    usage = reply["usage"]
    out.pp_prompt_tokens = int(usage["prompt_tokens"])
    out.pp_cached_tokens = max(out.pp_cached_tokens, int(usage.get("cached_prompt_tokens", 0)))
    return out.pp_prompt_tokens / latency


async def _batch_vs_one_by_one(client: Client, cfg: Config, out: ServerFigures) -> None:
    """/generate/batch of 8 against the same 8 one after another."""
    seq_walls: list[float] = []
    batch_walls: list[float] = []
    for _ in range(cfg.batch_rounds):
        prompts = [short_prompt(i) for i in range(BATCH_SIZE)]
        t0 = time.perf_counter()
        seq_tokens = 0
        for prompt in prompts:
            reply = await client.post_json(
                "/generate", {"prompt": prompt, **greedy(cfg.max_tokens)}
            )
            seq_tokens += int(reply["usage"]["completion_tokens"])
        seq_walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reply = await client.post_json(
            "/generate/batch", {"prompts": prompts, **greedy(cfg.max_tokens)}
        )
        batch_walls.append(time.perf_counter() - t0)
        out.seq_tokens += seq_tokens
        out.batch_tokens += int(reply["usage"]["completion_tokens"])
    out.seq_wall = median(seq_walls)
    out.batch_wall = median(batch_walls)


async def _follow_up_turn(
    client: Client, cfg: Config, system_body: str, out: ServerFigures
) -> None:
    """A follow-up chat turn: warm (shared prefix in a slot) against cold."""
    warm: list[float] = []
    cold: list[float] = []
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for _ in range(cfg.rounds):
        first, other = random.sample(letters, 2)
        unique = f"{tag()} "  # the system prompt's first characters differ every round
        body = unique + system_body
        turn1 = await client.post_json(
            "/chat",
            {
                "messages": chat_conversation(body, first, None),
                **greedy(cfg.chat_answer_tokens),
            },
        )
        answer = turn1["choices"][0]["message"]["content"].strip() or "I do not know."
        before = await client.counters()
        res = await client.stream(
            "/chat", {"messages": chat_conversation(body, first, answer), **greedy(1)}
        )
        delta = (await client.counters()) - before
        warm.append(res.ttft)
        out.warm_cached, out.warm_prompt = delta.cached, delta.prompt
        before = await client.counters()
        res = await client.stream(
            "/chat", {"messages": chat_conversation(body, other, answer), **greedy(1)}
        )
        delta = (await client.counters()) - before
        cold.append(res.ttft)
        out.cold_cached = max(out.cold_cached, delta.cached)
    out.warm_ttft = median(warm)
    out.cold_ttft = median(cold)
    if client.has_counters and out.warm_prompt and out.warm_cached < out.warm_prompt // 2:
        out.notes.append(
            f"follow-up turn reused only {out.warm_cached} of {out.warm_prompt} prompt "
            "tokens: the prefix cache did not hit"
        )


def measure(
    cfg: Config, inproc: InProcess, repo_root: Path, timeout: float
) -> tuple[Ceiling, ServerFigures]:
    """Phase 2: start the server, measure it (and the ceiling between), always stop it."""
    out = ServerFigures()
    with ServerProcess(cfg, free_port(), repo_root) as server:
        server.wait_ready(timeout)
        assert server.proc is not None
        sampler = PeakRss(server.proc.pid)
        sampler.start()
        try:
            ceiling = asyncio.run(server_phase(server, cfg, inproc, out))
        except BenchError:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            out.peak_rss = sampler.stop()
            out.rss_samples = sampler.samples
    return ceiling, out
