"""Ollama's ``options`` in serving's terms: sampling settings, the token limit, stop strings.

Defaults where the client sends none are Ollama's own (``DefaultOptions`` in its
api/types.go): temperature 0.8, top_k 40, top_p 0.9, min_p 0.0, repeat_penalty 1.1,
repeat_last_n 64, presence and frequency penalties 0, num_predict -1 (no limit), seed -1
(random). A model's Modelfile may change them on Ollama; this server has no Modelfiles.

* ``num_predict``: -1 (no limit) and -2 (fill the context) both run to the context's end;
  so does 0 or any other value below 1.
* ``num_ctx``: each request here may use the server's per-request context
  (``engine.info.n_ctx``, set by --ctx-size / --parallel). A larger value runs with what
  there is, and one log line says so; a smaller one limits nothing (the prompt is never cut).
* ``repeat_last_n``: the engine's repetition penalty always looks back over the last 64
  tokens (Ollama's default); another value is accepted and logged once.
* Options this server does not implement (num_thread, num_gpu, mirostat, tfs_z, typical_p,
  num_keep, penalize_newline, ...) are accepted and logged once per name, as Ollama logs
  options it does not know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from locallab_cpp.engine.types import SamplingParams
from locallab_cpp.errors import InvalidRequest, printable

logger = logging.getLogger("locallab_cpp")

DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9
DEFAULT_MIN_P = 0.0
DEFAULT_REPEAT_PENALTY = 1.1
ENGINE_REPEAT_LAST_N = 64
"""The window of the engine's repetition penalty (engine/llama/slots.py PENALTY_LAST_N),
which is also Ollama's default ``repeat_last_n``."""
MAX_STOPS = 16

_logged: set[str] = set()
"""Option names already logged as not implemented (once per name per process)."""


class KnownOptions(msgspec.Struct, kw_only=True):
    """The options this server acts on, with their bounds; None: Ollama's default."""

    temperature: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1, le=2**31 - 1)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-100.0, le=100.0)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-100.0, le=100.0)] | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: (
        Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=MAX_STOPS)] | None
    ) = None
    num_predict: Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)] | None = None
    num_ctx: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None


_KNOWN = frozenset(KnownOptions.__struct_fields__)


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``options`` come to."""

    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    num_ctx: int | None = None


def known_options(options: dict[str, Any] | None) -> KnownOptions:
    """The options this server reads, checked (400 naming the option), the others logged
    once per name."""
    options = options or {}
    for name in options:
        if name not in _KNOWN and name not in _logged:
            _logged.add(name)
            logger.info("option %r is accepted and ignored: not implemented", printable(name, 64))
    given = {k: v for k, v in options.items() if k in _KNOWN and v is not None}
    try:
        # Not strict: Ollama reads 40.0 as top_k 40 (JSON numbers are floats to Go).
        return msgspec.convert(given, KnownOptions, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid request: 'options': {exc}.") from None


def settings_of(options: dict[str, Any] | None) -> Settings:
    """``options`` as serving's settings (see the module's docstring); 400 for a bad one."""
    o = known_options(options)
    if o.repeat_last_n is not None and o.repeat_last_n != ENGINE_REPEAT_LAST_N:
        _log_once(
            "repeat_last_n",
            "option repeat_last_n=%d is accepted; the repetition penalty looks back over "
            "the last %d tokens here",
            o.repeat_last_n,
            ENGINE_REPEAT_LAST_N,
        )
    seed = o.seed if o.seed is not None and o.seed >= 0 else None
    sampling = SamplingParams(
        temperature=DEFAULT_TEMPERATURE if o.temperature is None else o.temperature,
        top_p=DEFAULT_TOP_P if o.top_p is None else o.top_p,
        top_k=DEFAULT_TOP_K if o.top_k is None else o.top_k,
        min_p=DEFAULT_MIN_P if o.min_p is None else o.min_p,
        # 0 would divide the logits by zero: llama.cpp's "off" is 1.
        repetition_penalty=DEFAULT_REPEAT_PENALTY
        if o.repeat_penalty is None
        else o.repeat_penalty or 1.0,
        presence_penalty=o.presence_penalty or 0.0,
        frequency_penalty=o.frequency_penalty or 0.0,
        seed=seed,
    )
    limit = o.num_predict if o.num_predict is not None and o.num_predict > 0 else None
    stop = tuple(s for s in o.stop or () if s)
    return Settings(sampling=sampling, max_tokens=limit, stop=stop, num_ctx=o.num_ctx)


def note_num_ctx(settings: Settings, n_ctx: int) -> None:
    """One log line when the client asked for more context than one request has here."""
    if settings.num_ctx is not None and settings.num_ctx > n_ctx:
        logger.info(
            "num_ctx %d is more than the server's per-request context: running with %d "
            "tokens (raise --ctx-size, or lower --parallel, for more)",
            settings.num_ctx,
            n_ctx,
        )


def _log_once(name: str, message: str, *args: object) -> None:
    if name not in _logged:
        _logged.add(name)
        logger.info(message, *args)
