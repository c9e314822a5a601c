"""Phase 3 of scripts/bench.py: llama.cpp's own server, measured like ours.

``scripts/build_llama_server.sh`` builds ``llama-server`` from the llama.cpp that the
installed llama-cpp-python vendors (into ``.bench/llama-server/<version>/bin/``). After
phase 2 has stopped our server, this phase starts llama-server on the same GGUF with the
same threads, slots and per-slot context (``-t``, ``-np``, ``--kv-unified-per-slot``), and
with the context parameters our engine sets itself, read from our /system/info where it
reports them: one unified KV cache (``--kv-unified``), ``-b`` n_batch and ``-ub`` our CPU
n_ubatch, the KV cache types, ``--no-repack`` when our repacking is off. The rest are
llama-server's defaults: flash attention auto (as ours), mmap (ours reads the file instead),
32 context checkpoints per slot, ``--cache-reuse 0`` (no KV shifting, as ours), prompt
warm-up at load, with one exception: its RAM prompt cache (``--cache-ram``, 8 GiB by
default) is off, since it keeps a copy of idle slots' KV in RAM that grows with every
distinct prompt up to 8 GiB (a feature ours does not have: its cached prefixes stay in the
KV pool), which would make the peak depend on how long the benchmark runs.
``--llama-server-args`` appends flags (the later flag wins), e.g. ``"--cache-ram 8192"``.

Sliding-window models (Gemma 3): ``--llama-server-swa auto`` mirrors ours when /system/info
says whether its sliding-window layers keep only a window (``sliding_window`` in
active_model); when it does not say, llama-server keeps its default (window-sized SWA cache,
with context checkpoints); ``full`` adds ``--swa-full``, ``window`` never does.

The KV cache size: ``--llama-server-kv slots`` (default) gives llama-server ``-c slots x
per-slot context``, what llama-server needs to give every slot its whole context at once;
``pool`` gives it as many cells as our shared pool (``kv_pool_tokens``). Since the two KV
caches may then differ, the table also shows peak RSS less the KV cache: ours as
/system/info reports it, llama-server's as it logs its KV buffers (a short probe start with
``-lv 4`` before the measured start, whose log level stays at the default).

The load mirrors phase 2 without the in-process ceiling: the same warm-up (8 short streams,
one long prompt), then per round one streaming client, the long prompt
``PROMPT_RUNS_PER_ROUND`` times (non-streamed, one new token), 4 and 8 concurrent streaming
clients, with the same prompts (random tag + story opener, the ~600-token body) through
llama-server's native ``/completion`` (greedy: temperature 0, top_k 1, repeat_penalty 1).
Token counts are the ``tokens_predicted`` of each stream's final event. Peak RSS is sampled
by the same ``PeakRss`` thread from /health's first 200 (model loaded) to the end, as ours
is from the model load to the end of phase 2.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.client import StreamClient, StreamResult
from bench.config import (
    CONCURRENCY_LEVELS,
    MIB,
    PROMPT_RUNS_PER_ROUND,
    BenchError,
    Config,
    median,
    percentile,
)
from bench.phases import ServerFigures
from bench.processes import ChildProcess, PeakRss, free_port
from bench.workloads import long_prompt, short_prompt

BUILD_GLOB = ".bench/llama-server/*/bin/llama-server"
RSS_TARGET = 1.1
_KV_LINE = re.compile(r"KV buffer size =\s*([0-9.]+) MiB")
_COMPUTE_LINE = re.compile(r"compute buffer size =\s*([0-9.]+) MiB")


def find_binary(repo_root: Path, explicit: Path | None) -> tuple[Path | None, str]:
    """The llama-server to run and how it was chosen (or why there is none).

    A git worktree has no ``.bench/`` of its own (it is git-ignored), so after this
    checkout's the main checkout's build is looked for too."""
    if explicit is not None:
        if not explicit.is_file():
            raise BenchError(f"--llama-server {explicit}: no such file")
        return explicit, f"--llama-server {explicit}"
    import llama_cpp

    roots = [repo_root, *(r for r in [_main_checkout(repo_root)] if r and r != repo_root)]
    for root in roots:
        own = root / ".bench" / "llama-server" / llama_cpp.__version__ / "bin" / "llama-server"
        if own.is_file():
            return own, f"found {_shown(own, repo_root)}"
    for root in roots:
        others = sorted(root.glob(BUILD_GLOB))
        if others:
            return others[-1], (
                f"found {_shown(others[-1], repo_root)} (not built from llama-cpp-python "
                f"{llama_cpp.__version__})"
            )
    return None, (
        "llama-server phase skipped: no --llama-server and no "
        f"{BUILD_GLOB} (build one with scripts/build_llama_server.sh)"
    )


def _main_checkout(repo_root: Path) -> Path | None:
    """The main working tree when ``repo_root`` is a linked worktree (git's common dir)."""
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=repo_root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(common).parent if common.endswith(".git") else None


def _shown(path: Path, repo_root: Path) -> str:
    return str(path.relative_to(repo_root)) if path.is_relative_to(repo_root) else str(path)


@dataclass
class LlamaServerFigures:
    """The llama-server phase's results."""

    binary: str = ""
    command: list[str] = field(default_factory=list)
    n_ctx: int = 0
    per_slot: int = 0
    swa: str = ""
    """How its sliding-window layers were set up, and why."""
    decode_tps: float = math.nan
    ttft_s: float = math.nan
    single_tokens: list[int] = field(default_factory=list)
    pp_tps: float = math.nan
    pp_prompt_tokens: int = 0
    pp_cached_tokens: int = 0
    aggregate: dict[int, float] = field(default_factory=dict)
    ttft_p50: dict[int, float] = field(default_factory=dict)
    ttft_p95: dict[int, float] = field(default_factory=dict)
    agg_tokens: dict[int, int] = field(default_factory=dict)
    peak_rss: int = 0
    rss_samples: int = 0
    kv_bytes: int = 0
    """KV buffers as llama-server logs them (0: not found in the log)."""
    compute_bytes: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        return out


def server_command(
    binary: Path,
    model_path: Path,
    port: int,
    cfg: Config,
    srv: ServerFigures,
    kv_mode: str,
    swa_mode: str,
    extra: list[str],
) -> tuple[list[str], int, int, str]:
    """llama-server's command line, its -c, its per-slot context and its SWA setting."""
    from locallab_cpp.engine.llama.loading import ubatch_size

    model = srv.active_model
    slots = srv.parallel or cfg.parallel
    per_slot = srv.n_ctx
    if not per_slot:
        raise BenchError("our server reported no per-slot context: cannot mirror it")
    pool = int(model.get("kv_pool_tokens") or 0)
    n_ctx = pool if kv_mode == "pool" and pool else slots * per_slot
    n_batch = int(model.get("n_batch") or 512)
    cmd = [
        str(binary),
        "-m", str(model_path),
        "--host", "127.0.0.1", "--port", str(port),
        "-t", str(cfg.threads),
        "-np", str(slots),
        "-c", str(n_ctx),
        "--kv-unified", "--kv-unified-per-slot", str(per_slot),
        "-b", str(n_batch), "-ub", str(ubatch_size(n_batch, 0)),
        "-ctk", str(model.get("cache_type_k") or "f16"),
        "-ctv", str(model.get("cache_type_v") or "f16"),
        "--cache-ram", "0",
    ]  # fmt: skip
    if model.get("repack") == "off":
        cmd.append("--no-repack")
    swa_full, swa = _swa_full(model, swa_mode)
    if swa_full:
        cmd.append("--swa-full")
    return cmd + extra, n_ctx, per_slot, swa


def _swa_full(model: dict[str, Any], mode: str) -> tuple[bool, str]:
    if mode != "auto":
        return mode == "full", f"--llama-server-swa {mode}"
    if isinstance(model.get("swa_full"), bool):
        full = bool(model["swa_full"])
        return full, f"as ours (/system/info: swa_full {str(full).lower()})"
    window = model.get("sliding_window")
    if isinstance(window, int) and window > 0:
        return False, f"as ours (/system/info: sliding_window {window})"
    if isinstance(model.get("windowed"), bool):
        full = not model["windowed"]
        return full, f"as ours (/system/info: windowed {str(not full).lower()})"
    return False, (
        "llama-server's default (window-sized SWA cache with checkpoints); our "
        "/system/info does not say which ours uses"
    )


class LlamaServerProcess(ChildProcess):
    """llama-server as a subprocess."""

    name = "llama-server"

    def is_ready(self, client: httpx.Client) -> bool:
        """/health answers 200 (it answers 503 while the model loads)."""
        return client.get("/health").status_code == 200


def greedy(max_tokens: int) -> dict[str, Any]:
    """llama-server's fields for greedy decoding without repetition penalty."""
    return {
        "n_predict": max_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "top_p": 1.0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "cache_prompt": True,
    }


def final_event(result: StreamResult) -> dict[str, Any]:
    """The last event of a /completion stream (``"stop": true``, with token counts).

    SseParser keeps each event's JSON, joined without separators; JSON objects end where
    they end, so they are read back one after another."""
    decoder = json.JSONDecoder()
    text, pos, final = result.text, 0, None
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if isinstance(obj, dict) and obj.get("stop"):
            final = obj
    if final is None:
        raise BenchError("llama-server stream ended without its final event")
    return final


async def _streams(
    streams: StreamClient, cfg: Config, n_clients: int, max_tokens: int
) -> tuple[list[StreamResult], int, float]:
    results = await asyncio.gather(
        *(
            streams.stream(
                "/completion", {"prompt": short_prompt(i), **greedy(max_tokens), "stream": True}
            )
            for i in range(n_clients)
        )
    )
    tokens = sum(int(final_event(r)["tokens_predicted"]) for r in results)
    wall = max(r.t_done for r in results) - min(r.t_sent for r in results)
    return list(results), tokens, wall


async def _prompt_rate(http: httpx.AsyncClient, body: str, out: LlamaServerFigures) -> float:
    t0 = time.perf_counter()
    reply = await http.post("/completion", json={"prompt": long_prompt(body), **greedy(1)})
    latency = time.perf_counter() - t0
    if reply.status_code != 200:
        raise BenchError(f"POST /completion -> {reply.status_code}: {reply.text[:300]}")
    data = reply.json()
    out.pp_prompt_tokens = int(data["tokens_evaluated"])
    cached = int((data.get("timings") or {}).get("cache_n", 0))
    out.pp_cached_tokens = max(out.pp_cached_tokens, cached)
    return out.pp_prompt_tokens / latency


async def _load(
    server: LlamaServerProcess, cfg: Config, long_body: str, out: LlamaServerFigures
) -> None:
    """Phase 2's warm-up and rounds, without the in-process runs between them."""
    streams = StreamClient("127.0.0.1", server.port)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as http:
        try:
            await _streams(streams, cfg, max(CONCURRENCY_LEVELS), 4)
            await _prompt_rate(http, long_body, out)
            single_rates: list[float] = []
            single_ttfts: list[float] = []
            pp_rates: list[float] = []
            rates: dict[int, list[float]] = {n: [] for n in CONCURRENCY_LEVELS}
            ttfts: dict[int, list[float]] = {n: [] for n in CONCURRENCY_LEVELS}
            for _ in range(cfg.rounds):
                for n_clients in CONCURRENCY_LEVELS:
                    results, tokens, wall = await _streams(streams, cfg, n_clients, cfg.max_tokens)
                    out.agg_tokens[n_clients] = out.agg_tokens.get(n_clients, 0) + tokens
                    rates[n_clients].append(tokens / wall if wall > 0 else math.nan)
                    ttfts[n_clients].extend(r.ttft for r in results)
                    if n_clients != 1:
                        continue
                    r = results[0]
                    out.single_tokens.append(tokens)
                    single_ttfts.append(r.ttft)
                    if tokens >= 2 and r.t_first is not None and r.t_last is not None:
                        span = r.t_last - r.t_first
                        single_rates.append((tokens - 1) / span if span > 0 else math.nan)
                    for _k in range(PROMPT_RUNS_PER_ROUND):
                        pp_rates.append(await _prompt_rate(http, long_body, out))
        finally:
            streams.close()
    for n_clients in CONCURRENCY_LEVELS:
        out.aggregate[n_clients] = median(rates[n_clients])
        out.ttft_p50[n_clients] = percentile(ttfts[n_clients], 50)
        out.ttft_p95[n_clients] = percentile(ttfts[n_clients], 95)
    out.decode_tps = median(single_rates)
    out.ttft_s = median(single_ttfts)
    out.pp_tps = median(pp_rates)


def measure(
    binary: Path,
    model_path: Path,
    cfg: Config,
    srv: ServerFigures,
    long_body: str,
    timeout: float,
    kv_mode: str = "slots",
    swa_mode: str = "auto",
    extra_args: str = "",
) -> LlamaServerFigures:
    """Start llama-server, load it as phase 2 loads ours, sample its RSS, stop it."""
    extra = shlex.split(extra_args)
    port, probe_port = free_port(), free_port()
    cmd, n_ctx, per_slot, swa = server_command(
        binary, model_path, port, cfg, srv, kv_mode, swa_mode, extra
    )
    probe = server_command(binary, model_path, probe_port, cfg, srv, kv_mode, swa_mode, extra)
    probe_cmd = [*probe[0], "--no-warmup", "-lv", "4"]
    out = LlamaServerFigures(
        binary=str(binary), command=cmd, n_ctx=n_ctx, per_slot=per_slot, swa=swa
    )
    started = time.monotonic()
    # Probe: libllama logs its buffer sizes at llama-server's trace level only.
    with LlamaServerProcess(probe_cmd, probe_port) as prober:
        prober.wait_ready(timeout)
        log = prober.log()
    out.kv_bytes = round(sum(float(m) for m in _KV_LINE.findall(log)) * MIB)
    out.compute_bytes = round(sum(float(m) for m in _COMPUTE_LINE.findall(log)) * MIB)
    with LlamaServerProcess(cmd, port) as server:
        server.wait_ready(timeout)
        assert server.proc is not None
        sampler = PeakRss(server.proc.pid)
        sampler.start()
        try:
            asyncio.run(_load(server, cfg, long_body, out))
        except (BenchError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            print(server.log_tail(), file=sys.stderr)
            raise BenchError(f"llama-server phase failed: {exc!r}") from exc
        finally:
            out.peak_rss = sampler.stop()
            out.rss_samples = sampler.samples
    out.wall_s = time.monotonic() - started
    if out.single_tokens and min(out.single_tokens) < cfg.max_tokens // 2:
        out.notes.append(
            f"llama-server's single-stream runs ended early (tokens {out.single_tokens} of "
            f"{cfg.max_tokens})"
        )
    return out
