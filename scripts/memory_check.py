"""Check the memory estimate (locallab_cpp/models/sizing.py) against a real server.

For one GGUF and one set of ``serve`` flags this prints what the plan says the server needs
(``need_bytes``) and the peak resident memory of a real ``python -m locallab_cpp serve``
process: from its start, through the load, through rounds of generations that keep every
slot busy (one request per slot, each with a prompt of its own). The peak is the kernel's
high-water mark (VmHWM in /proc/PID/status, Linux), read just before the server is stopped;
psutil samples every 20 ms give the same figure elsewhere and show the phases.

    python scripts/memory_check.py                        # the embedded model, defaults
    python scripts/memory_check.py --quantize q8_0        # a Q8_0 copy made from it
    python scripts/memory_check.py --gguf my.gguf -- --n-ctx 4096 --parallel 2

``--quantize TYPE`` writes a copy of the embedded GGUF in another number format with
llama.cpp's own quantizer (into --out-dir, default /tmp/locallab_memory_check) and checks
that one. ``--model-id`` names the registry entry whose architecture the plan reads (the
file is laid over it with a user registry file, as a user would). ``--llama-log`` also
prints llama.cpp's own lines about its buffers (weights, KV caches, compute buffer), from a
server whose llama.cpp log is switched on.

Exit status: 0 when the peak is within --tolerance (default 10%) of the estimate, 1 when it
is not, 2 when the server did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from locallab_cpp.cli import build_parser  # noqa: E402
from locallab_cpp.config import FIELD_NAMES, Settings, load_settings  # noqa: E402
from locallab_cpp.models import sizing  # noqa: E402
from locallab_cpp.models.registry import ModelSpec, Registry  # noqa: E402

MIB = 1024 * 1024
DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "locallab_memory_check"
FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16",
          "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}  # fmt: skip
LLAMA_LINES = re.compile(
    r"(KV buffer size|compute buffer size =|output buffer size|model buffer size|"
    r"creating .*KV cache|llama_kv_cache: size)"
)

# The server process with --llama-log: llama.cpp's own lines at load are kept (the engine
# passes verbose=False and sets llama-cpp-python's logger to errors only).
VERBOSE_WRAPPER = """
import logging, sys
from llama_cpp import _internals, _logger
_logger.set_verbose = lambda _verbose: _logger.logger.setLevel(logging.DEBUG)
for _cls in (_internals.LlamaModel, _internals.LlamaContext):
    def _verbose(self, *args, _init=_cls.__init__, **kwargs):
        kwargs["verbose"] = True
        _init(self, *args, **kwargs)
    _cls.__init__ = _verbose
from locallab_cpp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Result:
    """One check: the plan and what the server really took."""

    gguf: str
    file_bytes: int
    flags: list[str]
    n_ctx_slot: int
    parallel: int
    pool_tokens: int
    kv_bytes: int
    fixed_bytes: int
    need_bytes: int
    available_bytes: int
    peak_rss_bytes: int
    loaded_rss_bytes: int
    sampled_peak_bytes: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    server_plan: str
    error: float
    """(need - peak) / peak: positive when the estimate is above what was used."""
    llama_lines: list[str]


def quantize(ftype: str, out_dir: Path) -> Path:
    """A copy of the embedded GGUF in ``ftype``, made once with llama.cpp's quantizer."""
    import llama_cpp

    source = Registry.load(None).ensure_local(Registry.load(None).get("gemma-3-270m"))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"gemma-3-270m-{ftype}.gguf"
    if target.is_file():
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[ftype])
    params.allow_requantize = True
    partial = target.with_suffix(".part")
    # llama.cpp prints every tensor while it works: keep that out of the report.
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if rc != 0:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"llama_model_quantize failed ({rc})")
    partial.rename(target)
    return target


def settings_of(flags: list[str]) -> Settings:
    """The settings the server will run with, from the same parser and sources it uses."""
    args = build_parser().parse_args(["serve", *flags])
    return load_settings({k: v for k, v in vars(args).items() if k in FIELD_NAMES})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (0 where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples a process's RSS every 20 ms and keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.last = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)
            time.sleep(0.02)


def prompt(index: int, words: int) -> str:
    """A prompt of its own for each request (no shared prefix to reuse): a count that
    starts at a different number, which the model goes on with."""
    start = 1000 * (index + 1) + 7 * index
    return ", ".join(str(n) for n in range(start, start + words)) + ","


async def busy_rounds(
    url: str, slots: int, rounds: int, words: int, max_tokens: int
) -> tuple[int, int, int]:
    """``rounds`` times, one request per slot at once; returns (requests, prompt tokens,
    completion tokens)."""
    totals = [0, 0, 0]
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(index: int) -> None:
            body = {"prompt": prompt(index, words), "max_length": max_tokens,
                    "do_sample": False, "repetition_penalty": 1.0}  # fmt: skip
            r = await client.post("/generate", json=body)
            r.raise_for_status()
            usage = r.json()["usage"]
            totals[0] += 1
            totals[1] += usage["prompt_tokens"]
            totals[2] += usage["completion_tokens"]

        for round_no in range(rounds):
            await asyncio.gather(*(one(round_no * slots + i) for i in range(slots)))
    return totals[0], totals[1], totals[2]


def check(args: argparse.Namespace, gguf: Path, flags: list[str]) -> Result:
    registry = Registry.load(None)
    base = registry.get(args.model_id)
    with tempfile.TemporaryDirectory(prefix="locallab-memcheck-") as tmp:
        models_file = Path(tmp) / "models.toml"
        # Laid over the registry's entry: the architecture stays, the file is ours.
        models_file.write_text(
            f'[[models]]\nid = "{base.id}"\npath = {json.dumps(str(gguf.resolve()))}\n',
            encoding="utf-8",
        )
        serve_flags = ["--models-file", str(models_file), "--model", base.id, *flags]
        settings = settings_of(serve_flags)
        spec: ModelSpec = Registry.load(settings.models_file).get(base.id)
        port = free_port()
        program = ["-c", VERBOSE_WRAPPER] if args.llama_log else ["-m", "locallab_cpp"]
        command = [sys.executable, *program, "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--rate-limit", "0",
                   *serve_flags]  # fmt: skip
        log_path = Path(tmp) / "server.log"
        file_bytes = gguf.stat().st_size
        # The plan as the server makes it: the memory available just before it starts.
        plan = sizing.plan(spec, settings, None, file_bytes)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)  # fmt: skip
        sampler = Sampler(proc.pid)
        sampler.start()
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
                    raise SystemExit(2)
                try:
                    health = httpx.get(url + "/health", timeout=5).json()
                    if health.get("model_loaded"):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            time.sleep(0.5)
            loaded = sampler.last
            requests, prompt_tokens, completion_tokens = asyncio.run(
                busy_rounds(url, plan.parallel, args.rounds, args.prompt_words, args.max_tokens)
            )
            time.sleep(0.5)
            peak = peak_rss(proc.pid) or sampler.peak
        finally:
            sampler.stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        output = log_path.read_text(errors="replace")
    plan_lines = [line for line in output.splitlines() if f"model {base.id}:" in line]
    llama_lines = [line.strip() for line in output.splitlines() if LLAMA_LINES.search(line)]
    return Result(
        gguf=str(gguf),
        file_bytes=file_bytes,
        flags=flags,
        n_ctx_slot=plan.n_ctx_slot,
        parallel=plan.parallel,
        pool_tokens=plan.pool_tokens,
        kv_bytes=plan.kv_bytes,
        fixed_bytes=plan.need_bytes - plan.kv_bytes,
        need_bytes=plan.need_bytes,
        available_bytes=plan.available_bytes,
        peak_rss_bytes=peak,
        loaded_rss_bytes=loaded,
        sampled_peak_bytes=sampler.peak,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        server_plan=plan_lines[-1].split(": ", 2)[-1] if plan_lines else "",
        error=(plan.need_bytes - peak) / peak if peak else float("nan"),
        llama_lines=llama_lines,
    )


def report(result: Result) -> None:
    def mib(n: int) -> str:
        return f"{n / MIB:8.1f} MiB"

    print(f"GGUF            {result.gguf} ({mib(result.file_bytes).strip()})")
    print(f"serve flags     {' '.join(result.flags) or '(defaults)'}")
    print(f"plan            {result.n_ctx_slot} tokens per request, {result.parallel} slots, "
          f"pool {result.pool_tokens} tokens")  # fmt: skip
    print(f"server's plan   {result.server_plan}")
    print(f"  KV + windows  {mib(result.kv_bytes)}")
    print(f"  the rest      {mib(result.fixed_bytes)}")
    print(f"  need          {mib(result.need_bytes)}")
    print(f"measured        {result.requests} requests ({result.prompt_tokens} prompt + "
          f"{result.completion_tokens} generated tokens), {result.parallel} at once")  # fmt: skip
    print(f"  loaded, idle  {mib(result.loaded_rss_bytes)}")
    print(f"  peak RSS      {mib(result.peak_rss_bytes)} (sampled: "
          f"{mib(result.sampled_peak_bytes).strip()})")  # fmt: skip
    print(f"error           {result.error:+.1%} (need vs peak)")
    for line in result.llama_lines:
        print(f"  llama.cpp: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="GGUF to check (default: the embedded one)")
    parser.add_argument("--quantize", choices=sorted(FTYPES),
                        help="check a copy of the embedded GGUF in this format")  # fmt: skip
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--model-id", default="gemma-3-270m",
                        help="registry entry whose architecture the plan reads")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-words", type=int, default=120,
                        help="numbers in each prompt (about 6 tokens each)")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--llama-log", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("flags", nargs="*", help="serve flags, after --")
    args = parser.parse_args(argv)
    if args.quantize:
        gguf = quantize(args.quantize, args.out_dir)
    elif args.gguf:
        gguf = args.gguf
    else:
        registry = Registry.load(None)
        gguf = registry.ensure_local(registry.get(args.model_id))
    result = check(args, gguf, list(args.flags))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        report(result)
    return 0 if abs(result.error) <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
