"""Plain data that crosses the boundary between the HTTP layer and an engine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from locallab_cpp.errors import LocalLabError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation rendered to the text the model continues."""

    text: str
    stop: tuple[str, ...]
    has_bos_text: bool
    """The text already starts with the BOS token's text, so tokenizing must not add one."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence picks its next token."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 80
    repetition_penalty: float = 1.15
    do_sample: bool = True
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """Greedy decoding: do_sample is off, or the temperature is 0."""
        return not self.do_sample or self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class GenerationInput:
    """One sequence to generate: an already tokenized prompt and its limits."""

    prompt_tokens: tuple[int, ...]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Newly generated text."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The sequence ended; the last event of a successful generation."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    token_ids: tuple[int, ...] = ()
    """The generated token ids (end-of-generation token excluded)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole generation, for the non-streaming endpoints."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    token_ids: tuple[int, ...] = ()


Event = TextChunk | Finished | LocalLabError


@dataclass(eq=False)
class GenerationHandle:
    """The event-loop side of one submitted sequence.

    The engine thread pushes events with :meth:`push` (thread-safe); the request handler
    reads them with :meth:`events` or :meth:`result`. Leaving :meth:`events` early, as a
    disconnecting client does, cancels the sequence.
    """

    loop: asyncio.AbstractEventLoop
    on_cancel: Callable[[GenerationHandle], None] = lambda _h: None
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False

    def push(self, event: Event) -> None:
        """Hand an event to the waiting coroutine (called from the engine thread)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def cancel(self) -> None:
        """Ask the engine to stop this sequence at its next step."""
        if not self.done and not self.cancelled.is_set():
            self.cancelled.set()
            self.on_cancel(self)

    async def events(self) -> AsyncIterator[TextChunk | Finished]:
        """Text chunks, then one Finished; raises the engine's error if it failed."""
        try:
            while True:
                event = await self.queue.get()
                if isinstance(event, LocalLabError):
                    self.done = True
                    raise event
                yield event
                if isinstance(event, Finished):
                    self.done = True
                    return
        finally:
            if not self.done:
                self.cancel()

    async def result(self) -> Completion:
        """Collect the whole generation."""
        parts: list[str] = []
        async for event in self.events():
            if isinstance(event, TextChunk):
                parts.append(event.text)
            else:
                return Completion(
                    text="".join(parts),
                    finish_reason=event.finish_reason,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    cached_tokens=event.cached_tokens,
                    token_ids=event.token_ids,
                )
        raise AssertionError("event stream ended without Finished")
