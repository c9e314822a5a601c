"""Command line: ``python -m locallab_cpp serve``,
``python -m locallab_cpp models list | pull ID | rm ID | info ID`` and
``python -m locallab_cpp chat [MODEL]``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from locallab_cpp import __version__, logsafe
from locallab_cpp.config import (
    CACHE_TYPE_CHOICES,
    ENV_PREFIX,
    FIELD_NAMES,
    LIST_FIELDS,
    REPACK_CHOICES,
    Settings,
    field_docs,
    load_settings,
)
from locallab_cpp.errors import ConfigError

# (flag, setting, type) for `serve`; help comes from the settings' own docstrings.
SERVE_FLAGS: tuple[tuple[str, str, Any], ...] = (
    ("--host", "host", str),
    ("--port", "port", int),
    ("--ollama-port", "ollama_port", int),
    ("--model", "model", str),
    ("--n-ctx", "n_ctx", int),
    ("--threads", "threads", int),
    ("--n-gpu-layers", "n_gpu_layers", int),
    ("--repack", "repack", str),
    ("--cache-type-k", "cache_type_k", str),
    ("--cache-type-v", "cache_type_v", str),
    ("--parallel", "parallel", int),
    ("--kv-pool-tokens", "kv_pool_tokens", int),
    ("--memory-limit", "memory_limit", int),
    ("--max-models", "max_models", int),
    ("--gpu-memory-limit", "gpu_memory_limit", int),
    ("--prompt-cache-ram", "prompt_cache_ram", int),
    ("--prompt-cache-min-tokens", "prompt_cache_min_tokens", int),
    ("--prompt-cache-dir", "prompt_cache_dir", str),
    ("--prompt-cache-disk", "prompt_cache_disk", int),
    ("--n-batch", "n_batch", int),
    ("--rpc", "rpc", str),
    ("--rpc-backend", "rpc_backend", str),
    ("--queue-size", "queue_size", int),
    ("--max-generation-s", "max_generation_s", float),
    ("--shutdown-grace-s", "shutdown_grace_s", float),
    ("--max-n", "max_n", int),
    ("--responses-store", "responses_store", int),
    ("--rate-limit", "rate_limit", float),
    ("--rate-burst", "rate_burst", int),
    ("--max-body-bytes", "max_body_bytes", int),
    ("--max-header-bytes", "max_header_bytes", int),
    ("--api-key", "api_keys", str),
    ("--allowed-host", "allowed_hosts", str),
    ("--cors-origin", "cors_origins", str),
    ("--model-alias", "model_aliases", str),
    ("--keep-alive", "keep_alive", str),
    ("--pin", "pin", str),
    ("--models-file", "models_file", str),
    ("--log-level", "log_level", str),
)

METAVARS: dict[str, str] = {
    "keep_alive": "DURATION",
    "pin": "MODEL",
    "prompt_cache_ram": "BYTES",
    "prompt_cache_disk": "BYTES",
    "prompt_cache_dir": "DIR",
    "rpc": "HOST:PORT[,HOST:PORT...]",
    "rpc_backend": "PATH",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "repack": REPACK_CHOICES,
    "cache_type_k": CACHE_TYPE_CHOICES,
    "cache_type_v": CACHE_TYPE_CHOICES,
}


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    docs = field_docs()
    defaults = Settings()
    for flag, name, kind in SERVE_FLAGS:
        default = getattr(defaults, name)
        shown = "" if name == "models_file" else f" Default: {default}."
        if name in LIST_FIELDS:
            # Repeatable; a list given here replaces the environment's and models.toml's.
            shown = " Default: none."
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            action="append" if name in LIST_FIELDS else "store",
            # One value a flag: --api-key KEY, not --api-key API_KEYS.
            metavar=METAVARS.get(name)
            or (flag.removeprefix("--").upper().replace("-", "_") if name in LIST_FIELDS else None),
            choices=CHOICES.get(name),
            help=f"{docs.get(name, '')}{shown} Env: {ENV_PREFIX}{name.upper()}.",
        )
    for flag, name in (
        ("--no-model", "no_model"),
        ("--no-draft", "no_draft"),
        ("--rate-limit-loopback", "rate_limit_loopback"),
        ("--pull-on-demand", "pull_on_demand"),
        ("--metrics", "metrics"),
        ("--rpc-allow-remote", "rpc_allow_remote"),
    ):
        parser.add_argument(
            flag,
            dest=name,
            action="store_true",
            default=None,
            help=f"{docs.get(name, '')} Env: {ENV_PREFIX}{name.upper()}.",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m locallab_cpp``."""
    serve_help = argparse.ArgumentParser(prog="serve", add_help=False)
    _add_serve_flags(serve_help)
    help_text = serve_help.format_help()
    flags_text = help_text[help_text.index("options:") + len("options:\n") :].rstrip()
    parser = argparse.ArgumentParser(
        prog="python -m locallab_cpp",
        description="A laptop-local LLM server: the LocalLab HTTP API over llama.cpp.",
        epilog="flags of `serve` (each also a LOCALLAB_* environment variable, and a key of "
        "the [server] table in models.toml):\n" + flags_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"locallab_cpp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Serve the LocalLab API.")
    _add_serve_flags(serve)
    models = sub.add_parser(
        "models", help="List, download, remove and describe the models of the registry."
    )
    models_sub = models.add_subparsers(dest="models_command", required=True)
    file_help = (
        "User registry file laid over the package's models.toml "
        f"(default: {ENV_PREFIX}MODELS_FILE, else ~/.config/locallab_cpp/models.toml)."
    )
    commands = (
        ("list", "List registry entries: on disk or not, size, memory estimate."),
        ("pull", "Download a model into the Hugging Face cache and check its sha256."),
        ("rm", "Delete a downloaded model from the Hugging Face cache."),
        ("info", "Show a registry entry, where its file is and what it needs."),
    )
    for name, help_text in commands:
        command = models_sub.add_parser(name, help=help_text, description=help_text)
        if name != "list":
            command.add_argument("model_id", metavar="ID", help="A model id of the registry.")
        command.add_argument("--models-file", dest="models_file", default=None, help=file_help)
    _add_chat_parser(sub)
    from locallab_cpp.cli.rpc_worker import add_parser as add_rpc_worker

    add_rpc_worker(sub)
    return parser


def _add_chat_parser(sub: Any) -> None:
    text = "Chat with a model in the terminal, through a running server or one of its own."
    chat = sub.add_parser("chat", help=text, description=text)
    chat.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="A chat model of GET /v1/models (default: the loaded one).",
    )
    chat.add_argument(
        "--url",
        default=None,
        help="The server's base URL (default: the settings' host and port, "
        "http://127.0.0.1:8000 unless changed).",
    )
    chat.add_argument(
        "--embedded",
        action="store_true",
        help="Start a server of its own (python -m locallab_cpp serve on a free loopback "
        "port) for the chat, and stop it at the end.",
    )
    chat.add_argument(
        "--api-key",
        dest="api_key",
        default=None,
        metavar="KEY",
        help=f"Sent as a Bearer token (default: {ENV_PREFIX}API_KEY).",
    )
    chat.add_argument("--system", default=None, metavar="TEXT", help="The system prompt.")
    chat.add_argument("--temperature", type=float, default=None, help="Sampling temperature.")
    chat.add_argument("--max-tokens", type=int, default=None, help="The most tokens of one answer.")
    chat.add_argument(
        "--n-ctx", type=int, default=None, help="With --embedded: the server's --n-ctx."
    )
    chat.add_argument(
        "--threads", type=int, default=None, help="With --embedded: the server's --threads."
    )


def _exit_cleanly(_signum: int, _frame: object) -> None:
    # uvicorn re-raises SIGINT/SIGTERM once its graceful shutdown is done; by then all is
    # closed, so the process ends with status 0 instead of dying by the signal.
    raise SystemExit(0)


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` but not listening yet.

    asyncio's ``create_server`` calls ``listen()`` on it once the app's startup (the model's
    load) is done, so until then connections are refused, as with uvicorn's own binding;
    binding first makes a port already in use fail before the model loads.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restarted server may bind while old connections are in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def listeners(settings: Settings) -> list[socket.socket] | None:
    """The sockets to serve on: None (uvicorn binds ``host:port`` itself) unless
    ``ollama_port`` asks for a second one, then both, bound here."""
    if settings.ollama_port is None:
        return None
    main_socket = bind_listener(settings.host, settings.port)
    try:
        return [main_socket, bind_listener(settings.host, settings.ollama_port)]
    except ConfigError:
        main_socket.close()
        raise


def _serve(settings: Settings) -> int:
    import uvicorn

    from locallab_cpp.app import create_app
    from locallab_cpp.http.access import security_warnings

    class Server(uvicorn.Server):
        """uvicorn's server, letting running generations finish before it shuts down.

        At shutdown it stops listening, refuses new generations, waits up to
        ``shutdown_grace_s`` for the running ones to end, then ends the rest itself: uvicorn
        would otherwise wait for open streams (up to its own graceful timeout) and then cut
        them mid-body; ending them first gives each an `event: error` and `[DONE]`.
        """

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # uvicorn says where it listens only for the sockets it bound itself.
            for sock in sockets or []:
                address, port = sock.getsockname()[:2]
                shown = f"[{address}]" if ":" in address else address
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port
                )

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:  # no new connections during the grace period
                server.close()
            manager = getattr(app.state, "models", None)
            if manager is not None:
                await manager.drain(settings.shutdown_grace_s)
                await manager.close()
            await super().shutdown(sockets)

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    for warning in security_warnings(settings):
        print(f"WARNING: {warning}", file=sys.stderr)
    sockets = listeners(settings)  # one app, its lifespan run once, on every socket
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        lifespan="on",
        # httptools (faster per streamed token) reads request heads of any size; where the
        # network can reach the server, h11 stops reading one about max_header_bytes long.
        # The Host check answers 431 past that size under either parser.
        http="auto" if settings.is_loopback else "h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    # After uvicorn.Config, which sets up uvicorn's loggers: request data in any log line
    # (the access log's decoded path, a model id) gets its control characters escaped.
    logsafe.install()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    Server(config).run(sockets=sockets)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "chat":
            from locallab_cpp.cli.chat import default_url, run_chat

            # The chat's own flags are no server settings: only the environment and
            # models.toml (where the server listens) count here.
            settings = load_settings()
            return run_chat(args, args.url or default_url(settings.host, settings.port))
        if args.command == "rpc-worker":
            from locallab_cpp.cli.rpc_worker import run_worker

            return run_worker(args)
        given = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
        settings = load_settings(given)
        if args.command == "serve":
            return _serve(settings)
        from locallab_cpp.cli.models import run_models_command

        return run_models_command(args.models_command, getattr(args, "model_id", None), settings)
    except ConfigError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
