"""The engine interface the HTTP layer depends on.

Controllers (the LocalLab API today, an OpenAI-compatible API later) talk to this
interface only; llama-cpp-python stays behind it, and unit tests hand in a fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from locallab_cpp.engine.types import ChatPrompt, GenerationHandle, GenerationInput
from locallab_cpp.errors import LocalLabError


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What an open engine serves, for /models/current and /system/info."""

    model_id: str
    name: str
    description: str
    n_ctx: int
    """Context length of each slot, in tokens."""
    n_ctx_train: int
    n_gpu_layers: int
    parallel: int
    size_bytes: int
    chat_format: str | None
    loaded_at: float
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Live counters of an engine."""

    active: int
    """Sequences being decoded now."""
    queued: int
    """Sequences waiting for a free slot."""
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    drafted_tokens: int = 0
    """Generated tokens that came from verified prompt-lookup guesses (drafting.py)."""


class Engine(Protocol):
    """A loaded model that generates text for many sequences at once."""

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model."""
        ...

    def stats(self) -> EngineStats:
        """Live counters; cheap and safe to call from the event loop."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``, special tokens parsed."""
        ...

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> ChatPrompt:
        """Render a conversation with the model's chat template."""
        ...

    def submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        """Queue sequences for generation, all or none.

        Must be called on the event loop. Raises PayloadTooLarge when a prompt does not
        fit a slot's context and ServerBusy when the queue cannot take them all.
        """
        ...

    def close(self, reason: LocalLabError | None = None) -> None:
        """Stop generating, end in-flight sequences with ``reason`` and free the model.

        Blocking: call it from a worker thread.
        """
        ...
