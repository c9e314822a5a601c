"""The editor workload, ours beside llama-server in one run: autocomplete and embeddings.

Phase ``infill`` (autocomplete latency, what llama.vim / llama.vscode feel on every
keystroke): a fill-in-the-middle request of a 1,500-token prefix and a 480-token suffix of
code, streamed, ``n_predict`` 32, greedy; then the same request after a one-line edit three
lines before the cursor, the case a typing user's next request is (warm cache). Time to
the first content event (TTFT) and to the last; the prompt and cached token counts each
server reports (``timings.prompt_n`` / ``cache_n``). Ours: POST /infill; llama-server:
its POST /infill. Both serve the same file, the FIM copy of the embedded model
(tests/integration/fim_model.py: FIM tokens declared on unused tokens, so the text is no
good code; the prompt is the workload), both at once on the same settings: one slot,
``--n-ctx`` per slot, ``--threads``, n_batch 2048 with n_ubatch 128 (ours: --n-batch 2048,
whose CPU n_ubatch is 128; llama-server: -b 2048 -ub 128; llama-server's /infill keeps at
most 3/4 of n_batch of the prefix and 1/4 of the suffix, so a smaller batch would shorten
its prompt), f16 KV, the sliding-window layers holding only a window (our default and
llama-server's: no --swa-full), llama-server's RAM prompt cache off (--cache-ram 0, as
bench/llama_server.py). Rounds interleave the servers (the order alternating),
each round's cold request with a new first line so nothing is cached; medians.

Phase ``embeddings`` (bench/embeddings.py): embeddings per second of 512-token
chunks through POST /v1/embeddings on both.

    .venv/bin/python scripts/bench_editor.py --phase infill       # a few minutes
    .venv/bin/python scripts/bench_editor.py --phase embeddings
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.config import REPO_ROOT as REPO
from bench.config import BenchError, machine_info, median
from bench.editor_servers import (
    OurServer,
    TheirServer,
    our_command,
    server_env,
    their_command,
)
from bench.embeddings import embeddings_phase, embeddings_table
from bench.processes import free_port

sys.path.insert(0, str(REPO / "tests" / "integration"))

PREFIX_TOKENS = 1500
SUFFIX_TOKENS = 480
"""Under llama-server's suffix share at n_batch 2048 (512 less the current line and 2)."""
CURRENT_LINE = "    result = compute("
EDIT_LINES_BACK = 3


# ----- text -----------------------------------------------------------------------------


def code_lines(stem: str, target: int, count: Callable[[str], int]) -> list[str]:
    """Lines of made-up Python of about ``target`` tokens in all."""
    lines: list[str] = []
    total = 0
    i = 0
    while total < target:
        line = f"    {stem}_{i} = transform(items[{i}], scale={i % 7}, name='{stem}{i}')\n"
        if i % 9 == 0:
            line = f"\ndef {stem}_step_{i}(items, scale):\n"
        lines.append(line)
        total += count(line)
        i += 1
    return lines


@dataclass(frozen=True)
class FimCase:
    """One request's texts."""

    prefix: str
    suffix: str


def fim_cases(count: Callable[[str], int], tag: str) -> tuple[FimCase, FimCase]:
    """A cold request (its first line unique) and the same after a one-line edit."""
    prefix_lines = [f"# {tag}\n", *code_lines("value", PREFIX_TOKENS - 10, count)]
    suffix = "".join(code_lines("after", SUFFIX_TOKENS, count))
    edited = list(prefix_lines)
    line = edited[-EDIT_LINES_BACK]
    edited[-EDIT_LINES_BACK] = line.rstrip("\n") + "  # edited\n"
    return FimCase("".join(prefix_lines), suffix), FimCase("".join(edited), suffix)


# ----- phase 1: autocomplete --------------------------------------------------------------


@dataclass
class FimRun:
    ttft_s: float
    total_s: float
    predicted: int
    prompt_n: int
    cache_n: int


def infill_once(http: httpx.Client, case: FimCase, n_predict: int) -> FimRun:
    """One streamed /infill; times to the first content event and to the final one."""
    body = {
        "input_prefix": case.prefix,
        "input_suffix": case.suffix,
        "prompt": CURRENT_LINE,
        "n_predict": n_predict,
        "temperature": 0,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "cache_prompt": True,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    final: dict[str, Any] | None = None
    with http.stream("POST", "/infill", json=body) as r:
        if r.status_code != 200:
            raise BenchError(f"/infill answered {r.status_code}: {r.read()[:500]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise BenchError(f"/infill stream failed: {event}")
            if first is None and (event.get("content") or event.get("stop")):
                first = time.perf_counter()
            if event.get("stop"):
                final = event
    done = time.perf_counter()
    if final is None or first is None:
        raise BenchError("/infill stream ended without its final event")
    timings = final.get("timings") or {}
    return FimRun(
        ttft_s=first - started,
        total_s=done - started,
        predicted=int(final.get("tokens_predicted") or timings.get("predicted_n") or 0),
        prompt_n=int(timings.get("prompt_n") or 0),
        cache_n=int(timings.get("cache_n") or 0),
    )


@dataclass
class Side:
    cold: list[FimRun] = field(default_factory=list)
    edit: list[FimRun] = field(default_factory=list)


def infill_phase(args: argparse.Namespace) -> dict[str, Any]:
    from fim_model import FIM_MODEL_ID, fim_model
    from llama_cpp import Llama

    folder = Path(tempfile.mkdtemp(prefix="bench-editor-"))
    overlay = fim_model(folder)
    gguf = folder / f"{FIM_MODEL_ID}.gguf"
    vocab = Llama(str(gguf), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    ours_port, theirs_port = free_port(), free_port()
    ours_cmd = our_command(ours_port, args, overlay, FIM_MODEL_ID)
    theirs_cmd = their_command(theirs_port, args, gguf, [])
    sides = {"ours": Side(), "llama-server": Side()}
    with (
        OurServer(ours_cmd, ours_port, cwd=REPO, env=server_env()) as ours,
        TheirServer(theirs_cmd, theirs_port) as theirs,
    ):
        ours.wait_ready(300)
        theirs.wait_ready(300)
        # A new connection per request: one held idle while the other server works would be
        # closed by its keep-alive timeout, and a request sent on it then fails.
        fresh = httpx.Limits(max_keepalive_connections=0)
        clients = {
            "ours": httpx.Client(base_url=ours.url, timeout=600, limits=fresh),
            "llama-server": httpx.Client(base_url=theirs.url, timeout=600, limits=fresh),
        }
        try:
            warm, _ = fim_cases(count, "warm-up")
            for http in clients.values():
                infill_once(http, warm, 4)
            for round_no in range(args.rounds):
                order = list(clients) if round_no % 2 == 0 else list(reversed(clients))
                for name in order:
                    tag = f"round {round_no} {random.randrange(16**8):08x}"
                    cold, edited = fim_cases(count, tag)
                    sides[name].cold.append(infill_once(clients[name], cold, args.n_predict))
                    sides[name].edit.append(infill_once(clients[name], edited, args.n_predict))
                print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        except (httpx.HTTPError, BenchError):
            for server in (ours, theirs):
                print(f"--- {server.name} log ---\n{server.log_tail()}", file=sys.stderr)
            raise
        for http in clients.values():
            http.close()
    return {
        "commands": {"ours": ours_cmd, "llama-server": theirs_cmd},
        "sides": {
            name: {kind: [vars(run) for run in getattr(side, kind)] for kind in ("cold", "edit")}
            for name, side in sides.items()
        },
    }


def infill_table(result: dict[str, Any]) -> list[str]:
    rows = [
        "| Request | Server | TTFT (ms) | Total (ms) | Tokens predicted "
        "| Prompt computed / cached (tok) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, label in (("cold", "Cold, 1,500 + 480 tok"), ("edit", "After a one-line edit")):
        for name, side in result["sides"].items():
            runs = side[kind]
            rows.append(
                f"| {label} | {name} "
                f"| {median([r['ttft_s'] for r in runs]) * 1000:.0f} "
                f"| {median([r['total_s'] for r in runs]) * 1000:.0f} "
                f"| {median([r['predicted'] for r in runs]):.0f} "
                f"| {median([r['prompt_n'] for r in runs]):.0f} / "
                f"{median([r['cache_n'] for r in runs]):.0f} |"
            )
    return rows


# ----- main -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=("infill", "embeddings"), required=True)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads, both servers")
    p.add_argument("--parallel", type=int, default=1, help="slots, both servers")
    p.add_argument("--n-ctx", type=int, default=4096, help="context per slot, both servers")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n-predict", type=int, default=32)
    p.add_argument("--batch", type=int, default=16, help="inputs per /v1/embeddings call")
    p.add_argument("--batches", type=int, default=4, help="calls per round (embeddings)")
    p.add_argument(
        "--llama-server",
        type=Path,
        default=REPO / ".bench" / "llama-server" / "0.3.36" / "bin" / "llama-server",
        help="default: .bench/llama-server/0.3.36/bin/llama-server of this checkout",
    )
    p.add_argument("--server-args", default="", help="more flags for our serve")
    p.add_argument("--llama-server-args", default="", help="more flags for llama-server")
    p.add_argument("--json", type=Path, help="write the raw figures here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.llama_server).is_file():
        raise BenchError(f"no llama-server at {args.llama_server} (--llama-server)")
    machine = machine_info(args.threads)
    if args.phase == "infill":
        result = infill_phase(args)
        table = infill_table(result)
    else:
        result = embeddings_phase(args)
        table = embeddings_table(result, args)
    print("\n".join(f"| {k} | {v} |" for k, v in machine.items()))
    print()
    print("\n".join(table))
    for name, cmd in result["commands"].items():
        print(f"\n{name}: `{shlex.join(cmd)}`")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
