"""What one chat choice says, as neutral events: every API renders these and nothing else.

A choice's stream is reasoning and text deltas, tool calls (start, arguments, end; a call
is released whole, so its three events come together), and one :class:`ChoiceFinished`
last. The whole answer (:class:`Answer`) is the fold of the same events
(:func:`fold`), so a streamed and a whole answer cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from locallab_cpp.engine.types import FinishReason, TokenLogprob


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """More of the model's reasoning (``<think>`` text), apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More of the answer's text.

    ``logprobs``: the tokens generated since the last text delta (with logprobs asked for).
    Tokens of reasoning or tool calls ride on the next text delta, and those left at the end
    on a last delta with empty text, so every token is reported exactly once, in order."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A tool call begins: ``index`` counts the calls of this choice from 0."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArgs:
    """A fragment of call ``index``'s arguments, JSON text (fragments join to the whole)."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """Call ``index`` is complete and valid."""

    index: int


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    """The choice ended; its last event."""

    reason: FinishReason
    """"tool_calls" when calls were released, else the engine's ("stop", "length")."""
    stop_sequence: str | None
    """The client's stop string that ended the text (cut from it), else None; never one of
    the chat template's own end-of-turn strings."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    prompt_seconds: float = 0.0
    """Measured by the engine (Finished.prompt_seconds): the prompt's computation."""
    generation_seconds: float = 0.0
    """Measured by the engine (Finished.generation_seconds): the tokens' generation."""


AnswerEvent = (
    ReasoningDelta | TextDelta | ToolCallStart | ToolCallArgs | ToolCallEnd | ChoiceFinished
)


@dataclass(frozen=True, slots=True)
class CallOut:
    """A tool call of a whole answer; ``arguments`` is JSON text, valid for the tool."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """One whole choice: the fold of its events."""

    reasoning: str
    text: str
    tool_calls: tuple[CallOut, ...]
    finished: ChoiceFinished
    logprobs: tuple[TokenLogprob, ...] = ()
    """Every generated token (with logprobs asked for), in order."""


def fold(events: Iterable[AnswerEvent]) -> Answer:
    """The whole answer a choice's events make; they must end with ChoiceFinished."""
    reasoning: list[str] = []
    text: list[str] = []
    logprobs: list[TokenLogprob] = []
    calls: list[tuple[str, str, list[str]]] = []
    finished: ChoiceFinished | None = None
    for event in events:
        if isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, TextDelta):
            text.append(event.text)
            logprobs += event.logprobs
        elif isinstance(event, ToolCallStart):
            calls.append((event.id, event.name, []))
        elif isinstance(event, ToolCallArgs):
            calls[event.index][2].append(event.fragment)
        elif isinstance(event, ChoiceFinished):
            finished = event
    if finished is None:
        raise ValueError("a choice's events end with ChoiceFinished")
    return Answer(
        reasoning="".join(reasoning),
        text="".join(text),
        tool_calls=tuple(CallOut(i, name, "".join(parts)) for i, name, parts in calls),
        finished=finished,
        logprobs=tuple(logprobs),
    )
