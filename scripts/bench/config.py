"""Settings, constants and small helpers shared by every phase of the benchmark."""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import random
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
MEMORY_SLACK_BYTES = 150 * MIB
MARK_BEGIN = "<!-- bench:begin -->"
MARK_END = "<!-- bench:end -->"
CONCURRENCY_LEVELS = (1, 4, 8)
# Keys under /system/info's active_model that would give the KV cache size, if exposed.
KV_INFO_KEYS = ("kv_cache_bytes", "kv_bytes", "kv_cache_size_bytes")
BATCH_SIZE = 8
PROMPT_RUNS_PER_ROUND = 4


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


def markers(name: str) -> tuple[str, str]:
    """The comments around a phase's section in a Markdown file."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_marked(path: Path, name: str, body: str) -> None:
    """Replace the text between ``name``'s markers in ``path`` with ``body`` (ending in a
    newline); append the markers and it if absent."""
    start, end = markers(name)
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{start}\n{body}{end}"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def machine_line(threads: int) -> str:
    """The CPU and its cores, as a run's one-line header names them."""
    machine = machine_info(threads)
    return f"{machine['CPU']}, {machine['Cores']}"
