"""``python -m locallab_cpp rpc-worker``: lend this machine's CPU to a server's model over
llama.cpp's RPC protocol, from the same llama.cpp build as the server (protocol versions
match)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

logger = logging.getLogger("locallab_cpp")

DEFAULT_PORT = 50052


def add_parser(sub: Any) -> None:
    text = "Serve this machine's CPU to a locallab_cpp server over llama.cpp's RPC protocol."
    worker = sub.add_parser("rpc-worker", help=text, description=text)
    worker.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    worker.add_argument("--port", type=int, default=DEFAULT_PORT, help="Port to listen on.")
    worker.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: the physical cores)."
    )
    worker.add_argument(
        "--cache-dir",
        default="",
        help="A folder where the worker keeps tensors it was sent, so a reload skips them.",
    )
    worker.add_argument(
        "--allow-remote",
        action="store_true",
        help="Listen off the loopback interface. RPC has no authentication: trusted networks only.",
    )
    worker.add_argument(
        "--rpc-backend",
        default="",
        help="The RPC backend library when llama-cpp-python has none built in "
        "(default: where scripts/build_rpc.sh puts it).",
    )


def run_worker(args: argparse.Namespace) -> int:
    """Serve until killed (Ctrl-C or SIGTERM end the process)."""
    from locallab_cpp.engine.llama import rpc
    from locallab_cpp.engine.llama.loading import init_backend, physical_cores

    endpoint = rpc.Endpoint(args.host, args.port)
    if not endpoint.is_loopback and not args.allow_remote:
        print(f"error: {endpoint} is reachable from other machines, and RPC has no "
              "authentication; pass --allow-remote to listen there anyway",
              file=sys.stderr)  # fmt: skip
        return 2
    if not endpoint.is_loopback:
        print("warning: anyone who reaches this port can use this worker (RPC has no "
              "authentication)", file=sys.stderr)  # fmt: skip
    init_backend()
    # The server call below blocks in C, where Python's handlers never run: the default
    # action ends the process at once (its clients then see the connection close).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    threads = args.threads or physical_cores()
    try:
        print(f"rpc-worker listening on {endpoint} ({threads} threads)", flush=True)
        rpc.BACKEND.start_server(str(endpoint), threads, args.cache_dir, args.rpc_backend)
    except rpc.RpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
