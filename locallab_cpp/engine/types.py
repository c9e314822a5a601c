"""Plain data that crosses the boundary between the HTTP layer and an engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Required, TypedDict

from locallab_cpp.errors import InvalidRequest, LocalLabError

FinishReason = Literal["stop", "length", "tool_calls"]
"""Why a choice ended, as the APIs report it. The engine itself only ends sequences with
"stop" or "length" (:data:`EngineFinishReason`); "tool_calls" is the serving layer's, set
after it parsed a tool call out of the generated text."""
EngineFinishReason = Literal["stop", "length"]
"""Why the engine ended a sequence: an end-of-generation token or a stop string ("stop"),
or the token limit ("length")."""


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation rendered to the text the model continues."""

    text: str
    stop: tuple[str, ...]
    has_bos_text: bool
    """The text already starts with the BOS token's text, so tokenizing must not add one."""
    tool_format: str = "hermes"
    """How the model writes tool calls: "hermes", "llama3" or "mistral", the family of the
    GGUF template that lists the tools, else "hermes", what our text fallback teaches
    (read with :func:`locallab_cpp.serving.tools.tool_format_for`)."""
    segments: tuple[tuple[str, bool], ...] = ()
    """``text`` in pieces, each with whether the client wrote it: client pieces are tokenized
    as plain text, never as control tokens, so a message cannot forge a turn. Empty when the
    whole text is tokenized with special tokens parsed (no client text holds a control
    token's text). See engine/llama/chat_segments.py."""
    generation_prompt: str = ""
    """The template's own text after the last message (the assistant's turn opened, and
    for some models an opened ``<think>``): what may decide how the answer starts, where
    the client's text must not."""


# Chat messages are TypedDicts, not classes: they are handed to the GGUF's Jinja chat
# template as they are, and templates index plain dicts (message['role'], 'x' in message).


class ToolFunction(TypedDict, total=False):
    """A function the model may call (OpenAI's ``tools[].function``)."""

    name: Required[str]
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments object


class ToolSpec(TypedDict):
    """A tool definition, OpenAI style: ``{"type": "function", "function": {...}}``."""

    type: Literal["function"]
    function: ToolFunction


class ToolCallFunction(TypedDict):
    """The function an assistant turn called and its arguments."""

    name: str
    # JSON text, as OpenAI sends it, or the object itself. Templates are written for an
    # object (Hugging Face's convention), so rendering parses text that holds a JSON object.
    arguments: str | Mapping[str, Any]


class ToolCall(TypedDict):
    """One call in an assistant turn's ``tool_calls`` (OpenAI's shape)."""

    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(TypedDict, total=False):
    """One turn of a conversation, OpenAI style.

    ``role`` is "system", "user", "assistant" or "tool" (others reach the template as they
    are). ``content`` may be None, or absent, on an assistant turn that only calls tools. An
    assistant turn may carry ``tool_calls``; a "tool" turn is a tool's result and names the
    call it answers in ``tool_call_id`` (and the function in ``name``, which some templates
    print).
    """

    role: Required[str]
    content: str | None
    tool_calls: Sequence[ToolCall]
    tool_call_id: str
    name: str
    reasoning_content: str
    """An earlier assistant turn's reasoning, under the key the templates that show it
    read (Qwen3's, DeepSeek's); other templates leave it out."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence picks its next token.

    The defaults are neutral (the model's own distribution, nothing cut, nothing penalized):
    each API fills in its own defaults (LocalLab's live in api/locallab/protocol.py).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 turns top-k off."""
    repetition_penalty: float = 1.0
    """llama.cpp's multiplicative penalty over the last 64 tokens, prompt included."""
    do_sample: bool = True
    seed: int | None = None
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the likeliest one (0: off)."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted once from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time it was generated."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits; -100 bans a token, +100 forces it."""

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
    logprobs: int | None = None
    """Report each generated token with its log-probability and this many (0 to 20) most
    likely alternatives (TextChunk.logprobs, Finished.logprobs); None: off."""
    grammar: str | None = None
    """GBNF text (root rule ``root``) that the output must match; see
    :func:`locallab_cpp.engine.schema.grammar_for_json_schema`."""
    n: int = 1
    """Generate this many sequences (copies) from the prompt, as OpenAI's ``n``: submit
    returns one handle per copy, and the prompt is computed once for the copies that get a
    slot together (engine/base.py, Engine.submit). With a seed, copy i samples with seed + i."""
    keep_special: tuple[str, ...] = ()
    """Control tokens to keep in the text, by their text (tool-call markers such as Mistral's
    ``[TOOL_CALLS]``, which a parser must see); other control tokens never reach the text."""
    checkpoint_at: int | None = None
    """A prompt position where the client's next prompt is likely to part from this one (a
    FIM prompt: a little before the cursor). A sliding-window model's cache can only be cut
    back to a window checkpoint (engine/llama/windows.py), taken by default only near the
    prompt's end; this asks for one more here. Ignored by models without a window."""

    def copies(self) -> list[GenerationInput]:
        """The ``n`` single sequences this input stands for, in order: ``n`` set to 1 and,
        when a seed is given, copy i seeded with seed + i (so copies differ, reproducibly)."""
        if self.n < 1:
            raise InvalidRequest(f"n must be at least 1, not {self.n}.")
        seed = self.sampling.seed
        return [
            replace(
                self,
                n=1,
                sampling=self.sampling if seed is None else replace(self.sampling, seed=seed + i),
            )
            for i in range(self.n)
        ]


@dataclass(frozen=True, slots=True)
class TokenAlternative:
    """A token the model could have chosen at a position, with its log-probability."""

    id: int
    text: str
    """The token's text on its own (bytes that are part of a UTF-8 character become U+FFFD)."""
    piece: bytes
    """The token's bytes, exact."""
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token (GenerationInput.logprobs set).

    Log-probabilities are the log-softmax of the model's logits after the repetition,
    presence and frequency penalties and the logit bias, before temperature, top-k/top-p/min-p
    and the grammar: greedy decoding without a grammar picks the top alternative.
    """

    id: int
    text: str
    """The text this token added to the output. The texts of a generation's tokens join to
    exactly its text: a token that ends inside a UTF-8 character has "" and the token that
    completes it the whole character; the token that a stop string cut keeps only the part
    before the stop, and tokens entirely after the cut are not reported."""
    piece: bytes
    """The token's own bytes, exact (need not match ``text``, see there)."""
    logprob: float
    top: tuple[TokenAlternative, ...] = ()
    """The most likely tokens at this position, most likely first (GenerationInput.logprobs
    of them)."""


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Newly generated text."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens whose text this chunk holds (only with GenerationInput.logprobs). With
    logprobs on, chunks end at token boundaries, so their texts join to exactly ``text``."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The sequence ended; the last event of a successful generation."""

    finish_reason: EngineFinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    """Prompt tokens this sequence did not compute: found in its slot's KV cache, or copied
    from the copy that computed the prompt (GenerationInput.n)."""
    token_ids: tuple[int, ...] = ()
    """The generated token ids (end-of-generation token excluded)."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """Every token the chunks reported, in order (only with GenerationInput.logprobs)."""
    stop_sequence: str | None = None
    """The stop string (of GenerationInput.stop) that ended the sequence, cut from the
    text; None when something else ended it."""
    prompt_seconds: float = 0.0
    """Measured: from the sequence getting a slot until its prompt was computed (its first
    token sampled); 0.0 where the engine does not measure it."""
    generation_seconds: float = 0.0
    """Measured: from the first token sampled until the sequence ended."""
    queued_seconds: float = 0.0
    """Measured: from the submission until the sequence got a slot (time to first token is
    this plus ``prompt_seconds``)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole generation, for the non-streaming endpoints."""

    text: str
    finish_reason: EngineFinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    """See :attr:`TokenLogprob.text` for how they align with ``text``."""
    stop_sequence: str | None = None
    """See :attr:`Finished.stop_sequence`."""
    prompt_seconds: float = 0.0
    """See :attr:`Finished.prompt_seconds`."""
    generation_seconds: float = 0.0
    """See :attr:`Finished.generation_seconds`."""


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
    submitted_at: float = field(default_factory=time.monotonic)
    """When the sequence was submitted (Finished.queued_seconds counts from here)."""
    on_finished: Callable[[Finished], None] | None = None
    """Called on the event loop with the Finished event when a reader gets it: serving's
    metrics observer (serving/telemetry.py), so every API's generations are counted."""

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
                if isinstance(event, Finished):
                    self.done = True
                    if self.on_finished is not None:
                        self.on_finished(event)
                yield event
                if isinstance(event, Finished):
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
                    logprobs=event.logprobs,
                    stop_sequence=event.stop_sequence,
                    prompt_seconds=event.prompt_seconds,
                    generation_seconds=event.generation_seconds,
                )
        raise AssertionError("event stream ended without Finished")
