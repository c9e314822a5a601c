"""The one error hierarchy of locallab_cpp: what went wrong, never how an API says it.

Every error carries a :class:`ErrorKind`, a detail written for the user and, when waiting
helps, ``retry_after`` seconds. The HTTP status and body are each API's choice: its error
renderer (``locallab_cpp.api.<api>.errors``) maps the kind to both. This module is plain
Python because the engine raises these errors and must not depend on the web framework.

Details say what went wrong and what to do, and never carry a file-system path, a traceback
or a user name (:func:`scrub` is applied once more when a response is rendered).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """What kind of failure an error is; each API maps it to its own status and type."""

    INVALID_REQUEST = "invalid_request"
    """The request is malformed or a field is out of range."""
    UNAUTHORIZED = "unauthorized"
    """A missing or wrong API key."""
    FORBIDDEN = "forbidden"
    """The request is refused whoever sends it (a foreign Host or Origin)."""
    NOT_FOUND = "not_found"
    """An unknown route or resource."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """A known route asked with a method it does not serve."""
    MODEL_NOT_FOUND = "model_not_found"
    """A model id the registry does not know."""
    NO_MODEL = "no_model"
    """A generation needs a model and none is loaded."""
    CONFLICT = "conflict"
    """Another model load is under way."""
    TOO_LARGE = "too_large"
    """The request body is over the size limit."""
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """A body that is not declared JSON (Content-Type) where only JSON is read."""
    CONTEXT_LENGTH = "context_length"
    """The prompt does not fit the model's context."""
    RATE_LIMITED = "rate_limited"
    """The client went over its request budget."""
    BUSY = "busy"
    """Every generation slot and queue place is taken."""
    UNAVAILABLE = "unavailable"
    """A model cannot be loaded (missing file, failed download, bad GGUF)."""
    ABORTED = "aborted"
    """A generation was ended by an unload or a model switch."""
    DISCONNECTED = "disconnected"
    """The client hung up before its answer was ready."""
    ENGINE_FAILURE = "engine_failure"
    """llama.cpp itself failed."""
    CONFIG = "config"
    """The settings or the registry are invalid."""
    INTERNAL = "internal"
    """A bug: anything not foreseen."""


SERVER_FAULTS = frozenset({ErrorKind.ENGINE_FAILURE, ErrorKind.CONFIG, ErrorKind.INTERNAL})
"""Kinds that mean the server, not the client or the load, is at fault: they are logged."""


class LocalLabError(Exception):
    """Base of every error the server reports to a client."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    default_detail: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        self.detail = detail or self.default_detail
        self.retry_after = retry_after
        super().__init__(self.detail)


class ConfigError(LocalLabError):
    """The settings or the registry are invalid; raised at start, before serving."""

    kind = ErrorKind.CONFIG
    default_detail = "Invalid configuration"


class InvalidRequest(LocalLabError):
    """The request is malformed or a field is out of range."""

    kind = ErrorKind.INVALID_REQUEST
    default_detail = "Invalid request"


class TooManySequences(InvalidRequest):
    """A request asks for more sequences than the slots and the queue hold together, so no
    wait would let it in (a 400: ServerBusy's 503 says "retry", which would never work)."""

    @classmethod
    def check(cls, sequences: int, slots: int, queue_size: int) -> None:
        """Raise unless ``sequences`` (prompts times ``n``) can ever be queued at once by an
        engine of ``slots`` slots and ``queue_size`` queue places (the one rule: the engine
        and the test fake both call it)."""
        capacity = slots + queue_size
        if sequences > capacity:
            raise cls(
                f"This request asks for {sequences} sequences (prompts times n); the server "
                f"runs {slots} at once and queues {queue_size} more, so it takes at most "
                f"{capacity} per request. Send fewer prompts or a smaller n per request, or "
                "restart the server with a larger --queue-size."
            )


class NotFound(LocalLabError):
    """Unknown route or resource."""

    kind = ErrorKind.NOT_FOUND
    default_detail = "Not found"


class ModelNotFound(NotFound):
    """A model id the registry does not know."""

    kind = ErrorKind.MODEL_NOT_FOUND

    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"Unknown model '{printable(model_id)}'. "
            "GET /models/available lists the ids this server knows."
        )


class ModelNotDownloaded(ModelNotFound):
    """A registry model whose file is not on disk, named by a generation request: those
    do not download gigabytes (unless the server runs with --pull-on-demand)."""

    def __init__(self, model_id: str) -> None:
        shown = printable(model_id)
        NotFound.__init__(  # not ModelNotFound's "unknown model" text
            self,
            f"Model '{shown}' is not downloaded yet, and a generation request does not "
            f"download it. Pull it first: `python -m locallab_cpp models pull {shown}`, "
            f'POST /api/pull {{"model": "{shown}"}}, or POST /models/load '
            f'{{"model_id": "{shown}"}} (or start the server with --pull-on-demand).',
        )


class NoModelLoaded(LocalLabError):
    """A generation needs a model and none is loaded."""

    kind = ErrorKind.NO_MODEL
    default_detail = (
        "No model is loaded. Load one with POST /models/load "
        '{"model_id": "<id from GET /models/available>"}, or name one in "model_id".'
    )


class LoadConflict(LocalLabError):
    """Another model load is under way."""

    kind = ErrorKind.CONFLICT
    default_detail = "Another model load is in progress; retry when it has finished."


class PayloadTooLarge(LocalLabError):
    """The body is over the size limit, or (raised by an engine) a prompt is too long."""

    kind = ErrorKind.TOO_LARGE
    default_detail = "Request body is too large."


class ContextLengthExceeded(PayloadTooLarge):
    """The prompt does not fit the model's context (a PayloadTooLarge of its own kind)."""

    kind = ErrorKind.CONTEXT_LENGTH
    default_detail = "The prompt does not fit the model's context."

    @classmethod
    def check(cls, prompt_tokens: int, n_ctx: int) -> None:
        """Raise unless a prompt of ``prompt_tokens`` tokens leaves room in a context of
        ``n_ctx`` tokens for at least one generated token (the one rule: serving checks it
        before queueing, an engine again as its own guard)."""
        if prompt_tokens >= n_ctx:
            raise cls(
                f"The prompt is {prompt_tokens} tokens; this model's context holds {n_ctx} "
                "per request. Shorten the prompt, or restart the server with a larger --n-ctx."
            )
        if prompt_tokens == 0:
            raise cls("The prompt is empty after tokenization.")

    @classmethod
    def check_text(cls, text_bytes: int, max_token_bytes: int, n_ctx: int) -> None:
        """Raise when a text of ``text_bytes`` bytes cannot fit ``n_ctx`` tokens whatever
        its tokens, each standing for at most ``max_token_bytes`` bytes (0: unknown, no
        check); cheap, so huge prompts are refused before they are tokenized."""
        if max_token_bytes <= 0:
            return
        at_least = -(-text_bytes // max_token_bytes)
        if at_least >= n_ctx:
            raise cls(
                f"The prompt is at least {at_least} tokens ({text_bytes} bytes); this "
                f"model's context holds {n_ctx} per request. Shorten the prompt, or restart "
                "the server with a larger --n-ctx."
            )


class RateLimited(LocalLabError):
    """The client went over its request budget."""

    kind = ErrorKind.RATE_LIMITED
    default_detail = "Rate limit exceeded; slow down and retry after the given seconds."


class ServerBusy(LocalLabError):
    """Every slot and queue place is taken."""

    kind = ErrorKind.BUSY
    default_detail = "The server is busy: every generation slot and queue place is taken."


class ModelUnavailable(LocalLabError):
    """A model cannot be loaded: missing file, failed download, bad GGUF."""

    kind = ErrorKind.UNAVAILABLE


class InsufficientMemory(ModelUnavailable):
    """A model does not fit the memory the server may take, at the settings it would load
    with; refused before the model being served is closed. The detail says what would fit."""


class GenerationAborted(LocalLabError):
    """A generation was ended by an unload or a model switch."""

    kind = ErrorKind.ABORTED
    default_detail = "The generation was stopped because the model was unloaded or switched."


class ClientDisconnected(LocalLabError):
    """The client hung up before its answer was ready; nobody reads this response."""

    kind = ErrorKind.DISCONNECTED
    default_detail = "Client closed the request."


class EngineFailure(LocalLabError):
    """llama.cpp itself failed; with CONFIG and INTERNAL the only server-side faults."""

    kind = ErrorKind.ENGINE_FAILURE
    default_detail = "The inference engine failed; see the server log."


# Absolute paths under the usual roots, home-relative paths and Windows drive paths. Route
# names such as /models/available are left alone.
_PATH_LIKE = re.compile(
    r"(?:[A-Za-z]:\\|~/|/(?:home|root|Users|tmp|var|usr|opt|etc|mnt|media|private|Volumes"
    r"|srv|proc|dev|lib|bin|snap|nix|run|workspace|work|data)(?=/|\b))[^\s'\"`]*"
)


def printable(text: str, limit: int = 100) -> str:
    """``text`` fit to quote in a message: unprintable characters as "?", cut at ``limit``."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def scrub(detail: str) -> str:
    """Remove anything that looks like a file-system path from a message for a client."""
    return _PATH_LIKE.sub("<path>", detail)


def describe_msgspec_error(message: str, key: str | None = None) -> str:
    """One validation problem as a user reads it: ``'temperature': Expected ...``.

    msgspec ends its messages with "- at `$.field`"; the field name is said plainly instead.
    """
    message = message.strip()
    match = re.search(r" - at `\$\.?([^`]*)`$", message)
    if match:
        message = message[: match.start()]
        key = key or match.group(1) or None
    if key in (None, "", "data") or (key or "").startswith("["):
        return f"request body: {message}"
    return f"'{key}': {message}"
