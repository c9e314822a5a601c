"""Phase 1: llama.cpp called in-process (``llama_cpp.Llama``), the ceiling."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import Config, median
from bench.workloads import build_body, long_prompt, short_prompt
from locallab_cpp.engine.llama.repack import AppliedRepack, RepackPlan, apply_repack, resolve_repack

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
