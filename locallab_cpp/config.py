"""Server settings: one frozen object built from models.toml, ``LOCALLAB_*`` and CLI flags.

Precedence, lowest first: the defaults below, the ``[server]`` table of the package's
models.toml, the ``[server]`` table of the user's registry file, ``LOCALLAB_<FIELD>``
environment variables, then command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from locallab_cpp.config_types import _ORIGIN, CacheType, Port, Positive, RepackSetting
from locallab_cpp.config_types import CACHE_TYPE_BYTES as CACHE_TYPE_BYTES
from locallab_cpp.config_types import CACHE_TYPE_CHOICES as CACHE_TYPE_CHOICES
from locallab_cpp.config_types import REPACK_CHOICES as REPACK_CHOICES
from locallab_cpp.config_types import cache_bytes_per_pair as cache_bytes_per_pair
from locallab_cpp.config_types import is_loopback_address as is_loopback_address
from locallab_cpp.errors import ConfigError
from locallab_cpp.models.idle import parse_duration

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODELS_FILE = PACKAGE_DIR / "models" / "models.toml"
"""The package's own registry, shipped inside the package (and so inside a wheel)."""
ENV_PREFIX = "LOCALLAB_"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the server can be told at start. Immutable once built."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback exposes the server to the network."""

    port: Port = 8000
    """TCP port to listen on (0 picks a free one)."""

    ollama_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    """A second TCP port the same server also listens on, at the same host (11434 for
    clients that assume Ollama's port); every API is served on both, with the same checks
    and the same loaded model. None: only ``port``."""

    model: str | None = None
    """Model id from the registry to load at start; None means the registry's first entry."""

    no_model: bool = False
    """Start with no model loaded (load one later with POST /models/load)."""

    no_draft: bool = False
    """Never fill spare batch rows of greedy requests with prompt-lookup guesses (by default
    the engine does so where it measures that it is faster; the output is the same)."""

    n_ctx: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Tokens one request may use (prompt and answer); 0 means the model's trained context
    (as llama-server's -c 0), shrunk (not below 2048) when the available memory cannot hold
    it. The load's log line and /system/info (n_ctx_reason) say what was chosen and why."""

    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    """CPU threads for llama.cpp; 0 means the number of physical cores."""

    cache_type_k: CacheType = "f16"
    """Number format of the KV cache's keys: f16 (llama.cpp's default), q8_0 (about half
    the memory, nearly the same output) or q4_0 (about a quarter, visibly less exact)."""

    cache_type_v: CacheType = "f16"
    """Number format of the KV cache's values (as cache_type_k)."""

    repack: RepackSetting = "auto"
    """Whether llama.cpp may repack weights at load into the layouts its faster CPU kernels
    read. auto: everywhere except on CPUs with AMX, whose llama.cpp kernels crash; there the
    weights the CPU's own repacked layout takes still get it (no-amx). on: every extra
    buffer type llama.cpp offers, AMX included. off: none (llama-server's --no-repack)."""

    n_gpu_layers: int | None = None
    """Layers to offload to the GPU; None means all of them where llama.cpp was built with
    GPU offload (Metal, CUDA), else 0. -1 also means all."""

    parallel: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    """Sequences decoded together in one batch (llama-server's slots); 0 means 4, or fewer
    when the memory left for the KV pool is too small for that many (models/sizing.py)."""

    kv_pool_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Token cells of the KV cache that all slots share; a request may use up to n_ctx of
    them while the pool has room, and idle slots' cached prompts are evicted (least recently
    used first) when it is full. 0 means one slot context plus 2048 for each other slot,
    shrunk to fit the available memory."""

    memory_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The memory budget, in bytes, of all resident models together: what their loads,
    automatic choices (context, slots, KV pool) and can_load may count on, when less than
    the machine has free; 0 means what the machine has free (models/placement.py)."""

    gpu_memory_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The GPU memory budget, in bytes, of the layers all resident models offload; 0
    means what the GPUs have free (llama.cpp's device report). Not used on a CPU build."""

    max_models: Annotated[int, msgspec.Meta(ge=0, le=64)] = 4
    """Most models resident at once (a chat, an autocomplete, an embedding and a rerank
    model, say); loading one more unloads the least recently used idle one first. 0: as
    many as the memory budget holds."""

    prompt_cache_ram: Annotated[int, msgspec.Meta(ge=0)] = 1 << 30
    """Bytes of host memory, per model, for the KV state of long prompts' prefixes (an
    agent's system prompt and tools, a conversation so far): a request sharing a cached
    prefix restores it into whichever slot it gets instead of computing it, after its own
    slot's cache was evicted or when another session sent it. A hard limit (least recently
    used out first), counted in the memory estimate, and never more than an eighth of the
    memory available at load. With a disk store (prompt_cache_disk), a state stays in
    memory only until its file is written, then loads from disk when wanted. 0 switches
    the cache off."""

    prompt_cache_min_tokens: Annotated[int, msgspec.Meta(ge=16)] = 1024
    """Prompts shorter than this are neither cached nor restored from the prompt cache:
    computing them is cheap, and a slot's own cache already serves a follow-up turn."""

    prompt_cache_dir: str = ""
    """Folder where cached prompt states are also written (in the background), so that
    they survive a restart; created private to the user. Empty means
    $XDG_CACHE_HOME/locallab_cpp/prompt-cache (~/.cache/locallab_cpp/prompt-cache). Files
    from another model file, llama.cpp build or cache type, and damaged ones, are ignored."""

    prompt_cache_disk: Annotated[int, msgspec.Meta(ge=0)] = 8 << 30
    """Bytes the prompt cache's folder may take (least recently used files out first);
    0 keeps the prompt cache in memory only."""

    rpc: tuple[str, ...] = ()
    """llama.cpp RPC workers (``HOST:PORT``, repeatable or comma-separated) that the
    models' layers are placed on (a model's ``rpc`` in models.toml wins); each is reached
    over TCP before it is attached. Start them with ``python -m locallab_cpp rpc-worker``.
    See docs/rpc.md."""

    rpc_allow_remote: bool = False
    """Allow RPC workers off the loopback interface. llama.cpp's RPC protocol has no
    authentication: use it on a network you trust only."""

    rpc_backend: str = ""
    """The RPC backend to load when this llama-cpp-python has none built in: the
    ``libggml-rpc.so`` scripts/build_rpc.sh builds (empty: its default place under the
    user's cache folder)."""

    n_batch: Annotated[int, msgspec.Meta(ge=32, le=8192)] = 512
    """Most tokens sent to llama.cpp in one decode step; long prompts are cut into chunks of
    this size so that running streams keep flowing."""

    max_n: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    """Most choices one OpenAI request may ask for with ``n`` (each is a sequence of its own
    in a slot; the prompt is computed once for the copies that start together)."""

    responses_store: Annotated[int, msgspec.Meta(ge=0)] = 256
    """Responses kept in memory for ``previous_response_id`` and GET /v1/responses/{id}
    (those created with ``store: true``); past this the least recently used is dropped.
    0 keeps none: ``store: true`` is then accepted but nothing can be continued by id."""

    queue_size: Annotated[int, msgspec.Meta(ge=0)] = 128
    """Requests that may wait for a free slot; past this they get 503 with Retry-After."""

    max_generation_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Seconds a generation may run once it has a slot; past it, it ends as if it had
    reached its token limit (finish_reason "length"). 0 means no limit."""

    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """On SIGTERM or Ctrl-C, seconds running generations get to finish (no new request is
    taken meanwhile) before the rest are ended with an error."""

    rate_limit: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """Requests per minute allowed to each client address; 0 switches rate limiting off."""

    rate_burst: Positive = 10
    """Requests a client may send at once before the per-minute rate applies."""

    rate_limit_loopback: bool = False
    """Apply the rate limit to clients on the loopback interface (127.0.0.0/8, ::1) too. By
    default they are exempt: every local editor and tool shares 127.0.0.1, and one editor
    alone sends bursts the limit would refuse. Turn it on behind a reverse proxy on this
    machine, where every remote client arrives from loopback."""

    max_body_bytes: Positive = 4 * 1024 * 1024
    """Largest request body accepted; larger ones get 413 (bodies sent without
    Content-Length too: their bytes are counted as they arrive)."""

    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    """Largest request head (all header names and values together) accepted; larger ones
    get 431. On an address other than loopback the server also parses HTTP with h11, which
    stops reading a head about this size (httptools, used on loopback, has no limit)."""

    api_keys: tuple[str, ...] = ()
    """API keys, any of which a client must send (Authorization: Bearer <key>, or x-api-key:
    <key>) on every route but /health; none means no key is asked for. Repeat --api-key for
    several; LOCALLAB_API_KEY takes a comma-separated list and, unlike the flag, is not shown
    to other users of this machine in the process list."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names the server answers to besides localhost, 127.0.0.1, ::1, the --host
    value and IP addresses (plus this machine's own name when bound to 0.0.0.0 or ::);
    a request naming any other Host gets 403, which stops DNS rebinding. "*" accepts every
    Host. Repeatable; comma-separated in LOCALLAB_ALLOWED_HOSTS."""

    cors_origins: tuple[str, ...] = ()
    """Web origins (scheme://host[:port]) whose pages may call the server from a browser;
    "*" for any page. None by default: browser requests from other origins get 403.
    Repeatable; comma-separated in LOCALLAB_CORS_ORIGINS."""

    model_aliases: tuple[str, ...] = ()
    """Other names for registry models, as NAME=MODEL; NAME may be a glob
    ("claude-*=gemma-3-270m"). A request naming a registry id gets that model; one naming an
    alias gets its model (the first alias that matches); any other name gets the loaded
    model, as clients send names of their own vendor's models. Repeat --model-alias for
    several; comma-separated in LOCALLAB_MODEL_ALIASES."""

    keep_alive: str | float = "5m"
    """How long a model stays loaded once idle before it is unloaded (Ollama's default,
    5m): seconds ("300") or a duration ("5m", "1h30m"); -1 never unloads, 0 unloads as soon
    as a request ends. A request's Ollama keep_alive overrides it for that model; the next
    request for an idle-unloaded model (on any API, named or not) loads it again."""

    pin: tuple[str, ...] = ()
    """Models that never unload for idleness or to make room for another model, whatever
    --keep-alive or a request's keep_alive says (an explicit unload still unloads them).
    Repeat --pin for several; comma-separated in LOCALLAB_PIN."""

    metrics: bool = False
    """Serve Prometheus metrics at GET /metrics (requests, tokens, latencies, slots, queue,
    KV pool, prompt cache, model loads; docs/api.md). Off by default: /metrics is then a
    404. Like every route but /health it asks for the API key when one is set."""

    pull_on_demand: bool = False
    """Let a generation request that names a model not on disk download it (gigabytes,
    inside that request). By default it gets a 404 saying how to pull it (models pull,
    POST /api/pull, POST /models/load), which download as always."""

    models_file: str = str(DEFAULT_MODELS_FILE)
    """User model registry laid over the package's models.toml, which is always read first:
    its [[models]] entries add models or override, field by field, those with the same id,
    its first entry becomes the model served when none is named, and its [server] table
    overrides the package's. When no file is named,
    $XDG_CONFIG_HOME/locallab_cpp/models.toml (~/.config/locallab_cpp/models.toml) is used
    if it exists; the package's own file here means no user file."""

    log_level: str = "info"
    """Log level for the server (debug, info, warning, error)."""

    def __post_init__(self) -> None:
        # Raised as ValueError so that load_settings reports it as an invalid setting.
        if self.parallel > self.n_batch:
            # Each step sends one token of every busy slot in one batch of n_batch rows.
            raise ValueError(
                f"parallel ({self.parallel}) must not exceed n_batch ({self.n_batch}): every "
                "busy slot needs a row of each decode step's batch; raise --n-batch or "
                "lower --parallel"
            )
        if self.ollama_port is not None and self.ollama_port == self.port:
            raise ValueError(
                f"ollama_port ({self.ollama_port}) must differ from port: the server "
                "listens on both"
            )
        for key in self.api_keys:
            if not key or not all(33 <= ord(ch) < 127 for ch in key):
                raise ValueError(
                    "an API key must be non-empty printable ASCII without spaces "
                    "(it travels in an HTTP header)"
                )
        for alias in self.model_aliases:
            name, sep, target = alias.partition("=")
            if not sep or not name.strip() or not target.strip():
                raise ValueError(
                    f"model alias {alias!r} must be NAME=MODEL (e.g. claude-*=gemma-3-270m)"
                )
        parse_duration(self.keep_alive)  # a ValueError says what is wrong
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"CORS origin {origin!r} must be scheme://host[:port] with no path "
                    '(e.g. http://localhost:3000), or "*"'
                )

    @property
    def rate_limit_enabled(self) -> bool:
        """Whether the per-client token bucket is applied."""
        return self.rate_limit > 0

    @property
    def keep_alive_s(self) -> float | None:
        """``keep_alive`` in seconds; None: never unload for idleness."""
        return parse_duration(self.keep_alive)

    @property
    def is_loopback(self) -> bool:
        """Whether the bind address is reachable from this machine only."""
        return self.host == "localhost" or is_loopback_address(self.host)


FIELD_NAMES: tuple[str, ...] = Settings.__struct_fields__


LIST_FIELDS = frozenset(
    {"api_keys", "allowed_hosts", "cors_origins", "model_aliases", "pin", "rpc"}
)
"""Settings holding several values: repeatable flags, comma-separated environment values."""

ENV_ALIASES: dict[str, str] = {"api_keys": ENV_PREFIX + "API_KEY"}
"""Other environment names of a setting, read when its own is unset (LOCALLAB_API_KEY is
the name the issue and most tools' docs use for one key)."""


_OPTIONAL_FIELDS = frozenset({"model", "n_gpu_layers", "ollama_port"})
"""Settings whose environment value may be "none" (or "auto") to reset them to None."""


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in FIELD_NAMES:
        raw = env.get(ENV_PREFIX + name.upper())
        if (raw is None or raw == "") and name in ENV_ALIASES:
            raw = env.get(ENV_ALIASES[name])
        if raw is None or raw == "":
            continue
        values[name] = _parse_env(name, raw)
    return values


def _parse_env(name: str, raw: str) -> Any:
    # Env values are strings; "none" lets a user reset an optional field explicitly.
    if raw.lower() in {"none", "null", "auto"} and name in _OPTIONAL_FIELDS:
        return None
    if name in {"no_model", "no_draft", "rate_limit_loopback", "pull_on_demand", "metrics"}:
        return raw.lower() in {"1", "true", "yes", "on"}
    if name in LIST_FIELDS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def prompt_cache_folder(settings: Settings, env: Mapping[str, str] | None = None) -> Path:
    """Where the prompt cache's files go: ``prompt_cache_dir``, else the user's cache
    folder's locallab_cpp/prompt-cache."""
    if settings.prompt_cache_dir:
        return Path(settings.prompt_cache_dir).expanduser()
    env = os.environ if env is None else env
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "locallab_cpp" / "prompt-cache"


def user_models_file(env: Mapping[str, str] | None = None) -> Path:
    """Where a user's registry file is looked for when none is named."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "locallab_cpp" / "models.toml"


def resolve_models_file(named: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The user's registry file: the one named, else the one in the config folder if it
    exists, else the package's own models.toml (no user file)."""
    if named:
        return Path(named).expanduser()
    default = user_models_file(env)
    return default if default.is_file() else DEFAULT_MODELS_FILE


def _toml_values(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}") from None
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"[server] in {path.name} must be a table")
    return dict(server)


def load_settings(
    cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from the defaults, models.toml, the environment and CLI flags.

    ``cli`` holds only the flags the user actually gave (None values are ignored).
    """
    env = os.environ if env is None else env
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    env_values = _env_values(env)
    user_file = resolve_models_file(
        cli_values.get("models_file") or env_values.get("models_file"), env
    )
    merged: dict[str, Any] = {}
    merged.update(_toml_values(DEFAULT_MODELS_FILE))
    merged.update(_toml_values(user_file))
    merged.update(env_values)
    merged.update(cli_values)
    merged["models_file"] = str(user_file)
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"Invalid setting: {exc}") from None


def field_docs() -> dict[str, str]:
    """Each setting's docstring, read from this module's source (for ``--help``)."""
    import ast
    import inspect
    import itertools
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            body = node.body
            for stmt, nxt in itertools.pairwise(body):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs
