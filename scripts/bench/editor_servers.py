"""The servers of the editor workload (bench/editor.py, bench/embeddings.py): ours with a
registry overlay, llama-server, on the same settings."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.config import REPO_ROOT as REPO
from bench.processes import ChildProcess

# n_batch 2048 on both; 128 is our CPU n_ubatch for it, given to llama-server as -ub.
N_BATCH = 2048
N_UBATCH = 128


class OurServer(ChildProcess):
    """``serve`` with the FIM or embedding overlay."""

    name = "locallab_cpp"

    def is_ready(self, client: httpx.Client) -> bool:
        reply = client.get("/health")
        return reply.status_code == 200 and bool(reply.json().get("model_loaded"))


class TheirServer(ChildProcess):
    name = "llama-server"

    def is_ready(self, client: httpx.Client) -> bool:
        return client.get("/health").status_code == 200


def our_command(port: int, args: argparse.Namespace, overlay: Path, model: str) -> list[str]:
    return [
        sys.executable, "-m", "locallab_cpp", "serve",
        "--port", str(port),
        "--threads", str(args.threads),
        "--parallel", str(args.parallel),
        "--n-ctx", str(args.n_ctx),
        "--n-batch", str(N_BATCH),
        "--rate-limit", "0",
        "--log-level", "warning",
        "--models-file", str(overlay),
        "--model", model,
        *shlex.split(args.server_args),
    ]  # fmt: skip


def their_command(
    port: int, args: argparse.Namespace, gguf: Path, extra: Sequence[str]
) -> list[str]:
    return [
        str(args.llama_server),
        "-m", str(gguf),
        "--host", "127.0.0.1", "--port", str(port),
        "-t", str(args.threads),
        "-np", str(args.parallel),
        "-c", str(args.n_ctx * args.parallel),
        "-b", str(N_BATCH), "-ub", str(N_UBATCH),
        "-ctk", "f16", "-ctv", "f16",
        "--cache-ram", "0",
        *extra,
        *shlex.split(args.llama_server_args),
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env
