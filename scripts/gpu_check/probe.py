"""In-process GPU probe: llama_cpp's offload support, resolve_gpu_layers, and our engine
loading the tiny model (llama.cpp's load log kept, so its 'offloaded N/N layers' line shows)
plus greedy decode speed with all layers on the GPU and with none.

Usage: python probe.py MODELS_TOML MODEL_ID OUT_JSON   (llama.cpp's log goes to stderr)
"""
import asyncio
import contextlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path

result: dict = {}
toml, model_id, out_json = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def save() -> None:
    out_json.write_text(json.dumps(result, indent=2, default=str))


def step(name):
    def wrap(fn):
        try:
            result[name] = fn()
        except Exception as exc:  # keep going: every step reports on its own
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
        save()
        print(f"== {name}: {json.dumps(result[name], default=str)[:2000]}", file=sys.stderr, flush=True)
        return result[name]
    return wrap


import llama_cpp  # noqa: E402
import llama_cpp._internals as _internals  # noqa: E402

# Keep llama.cpp's load log: our engine opens the model with verbose=False, which sends the
# C library's stdout/stderr to /dev/null during the load.
_internals.suppress_stdout_stderr = lambda *a, **k: contextlib.nullcontext()
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
logging.getLogger("locallab_cpp.engine").setLevel(logging.DEBUG)  # init_backend: verbose log


@step("llama_cpp")
def _():
    return {
        "version": llama_cpp.__version__,
        "file": llama_cpp.__file__,
        "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
    }


from locallab_cpp.engine.llama import engine as le  # noqa: E402
from locallab_cpp.engine.llama import loading as ld  # noqa: E402
from locallab_cpp.engine.types import GenerationInput, SamplingParams  # noqa: E402
from locallab_cpp.models.registry import Registry  # noqa: E402
from locallab_cpp.config import Settings  # noqa: E402


@step("resolve_gpu_layers")
def _():
    return {
        "gpu_offload_supported": ld.gpu_offload_supported(),
        "None": ld.resolve_gpu_layers(None),
        "-1": ld.resolve_gpu_layers(-1),
        "0": ld.resolve_gpu_layers(0),
        "ALL_LAYERS": getattr(le, "ALL_LAYERS", None),
    }


_model: dict = {}


def model():
    """(spec, path) from the registry file, looked up once (inside a step, so errors are kept)."""
    if not _model:
        registry = Registry.from_file(toml)
        spec = registry.get(model_id)
        _model["v"] = (spec, registry.ensure_local(spec))
    return _model["v"]


async def generate(engine, prompt: str, n: int) -> dict:
    toks = tuple(engine.tokenize(prompt))
    greedy = SamplingParams(do_sample=False, temperature=0.0)
    t0 = time.perf_counter()
    [handle] = engine.submit([GenerationInput(toks, greedy, n)])
    first = None
    chunks = 0
    text = []
    fin = None
    async for ev in handle.events():
        if hasattr(ev, "text"):
            chunks += 1
            text.append(ev.text)
            if first is None:
                first = time.perf_counter()
        else:
            fin = ev
    t1 = time.perf_counter()
    done = fin.completion_tokens if fin is not None else None
    return {
        "prompt_tokens": len(toks),
        "completion_tokens": done,
        "finish_reason": getattr(fin, "finish_reason", None),
        "wall_s": round(t1 - t0, 4),
        "first_chunk_s": round(first - t0, 4) if first else None,
        "decode_tok_per_s": round((done - 1) / (t1 - first), 1) if first and done and done > 1 and t1 > first else None,
        "text_head": "".join(text)[:160],
    }


def run_engine(n_gpu_layers, label: str, n: int):
    settings = Settings(n_gpu_layers=n_gpu_layers, parallel=1, n_ctx=2048)
    print(f"== loading engine ({label}, n_gpu_layers={n_gpu_layers})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    spec, path = model()
    engine = le.open_llama_engine(spec, path, settings)
    load_s = time.perf_counter() - t0
    try:
        info = engine.info
        out = {"load_s": round(load_s, 3), "engine_n_gpu_layers": info.n_gpu_layers}
        out["warmup"] = asyncio.run(generate(engine, "The question is", 8))
        out["greedy_256"] = asyncio.run(generate(engine, "Hello world, the GPU is fast.", 256))
        out["greedy_256_again"] = asyncio.run(generate(engine, "Hello world, the GPU is fast.", 256))
        return out
    finally:
        engine.close()


step("engine_gpu_default")(lambda: run_engine(None, "default: all layers where offload works", 256))
step("engine_cpu_only")(lambda: run_engine(0, "cpu only", 256))
print("== probe done", file=sys.stderr, flush=True)
