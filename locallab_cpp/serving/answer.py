"""One chat choice read out of its generated text: reasoning split off, tool calls found,
checked and released, as neutral events (serving/events.py). The stream sends the events
as the text comes; the whole answer is the fold of the very same events
(:func:`whole_answer`), so the two cannot disagree.

Rules, the same for both and for every API (docs/api.md, "Tool calls"):

* A call is released only once its text ended (its arguments finished), whole: start,
  arguments in one fragment, end. A call cut off by the token limit is no call: the text
  the model wrote for it stays text.
* ``required`` / a named function (a grammar forces the calls): each call is checked alone
  when it ends; one that does not validate is text too.
* ``auto``: everything from the first call on is held until the generation ends. Then
  either every kept call validates and they are released as calls, with the text beside
  them as text, or none is a call and the text from the first call on, exactly as the
  model wrote it, is text.
* The finish reason is "tool_calls" when calls were released, else the engine's: a call
  cut off alone is "length".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from locallab_cpp.engine.types import Completion, Finished, TokenLogprob
from locallab_cpp.serving.events import (
    Answer,
    AnswerEvent,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    fold,
)
from locallab_cpp.serving.reasoning import ReasoningSplitter
from locallab_cpp.serving.toolcalls.formats import ToolCallFormat
from locallab_cpp.serving.toolcalls.plan import OFF, ToolPlan
from locallab_cpp.serving.toolcalls.streamer import CallRecord


@dataclass
class AnswerStream:
    """One chat choice as its text arrives; :meth:`feed` and :meth:`finish` give events.

    Single use: one stream reads one generation."""

    plan: ToolPlan = OFF
    fmt: ToolCallFormat | None = None
    """The model family's tool-call format; None reads no calls."""
    thinking: bool = False
    """The prompt opened a ``<think>``: the output starts inside the reasoning."""
    split_reasoning: bool = True
    """Whether ``<think>`` text is reasoning; off, it is text like the rest."""
    stops: Sequence[str] = ()
    """The client's stop strings: only these are reported as ChoiceFinished.stop_sequence."""
    _pending: list[TokenLogprob] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._splitter = (
            ReasoningSplitter(started_in_reasoning=self.thinking) if self.split_reasoning else None
        )
        self._streamer = self.fmt.streamer() if self.fmt is not None and self.plan.active else None
        self._raw = ""  # the answer text after the reasoning, as the model wrote it
        self._next = 0  # the first of the streamer's segments not yet released
        self._sent = 0  # tool calls released so far

    def feed(self, text: str, logprobs: Sequence[TokenLogprob] = ()) -> list[AnswerEvent]:
        """Events for newly generated text (perhaps none while something is held back)."""
        self._pending += logprobs
        reasoning, answer = self._splitter.feed(text) if self._splitter else ("", text)
        return self._events(reasoning, answer, final=False)

    def finish(self, done: Finished | Completion) -> list[AnswerEvent]:
        """The engine ended the choice: the events of what was held back, then
        ChoiceFinished."""
        reasoning, answer = self._splitter.finish() if self._splitter else ("", "")
        events = self._events(reasoning, answer, final=True)
        if self._pending:  # tokens of text that ended as reasoning or calls
            events.append(TextDelta("", tuple(self._pending)))
            self._pending = []
        # Calls released are whole and valid: the client acts on them even when the limit
        # cut the text after them (a forced parallel grammar lets a small model go on).
        reason = "tool_calls" if self._sent else done.finish_reason
        stop = done.stop_sequence if reason == "stop" and done.stop_sequence in self.stops else None
        events.append(
            ChoiceFinished(
                reason,
                stop,
                done.prompt_tokens,
                done.completion_tokens,
                done.cached_tokens,
                done.prompt_seconds,
                done.generation_seconds,
            )
        )
        return events

    # -- releasing ------------------------------------------------------------------------

    def _events(self, reasoning: str, answer: str, *, final: bool) -> list[AnswerEvent]:
        events: list[AnswerEvent] = [ReasoningDelta(reasoning)] if reasoning else []
        if self._streamer is None:
            released: list[AnswerEvent] = [TextDelta(answer)] if answer else []
        else:
            self._raw += answer
            if answer:
                self._streamer.feed(answer)
            if final:
                self._streamer.finish()
            released = self._release(final)
        return events + self._with_logprobs(_joined(released))

    def _with_logprobs(self, events: list[AnswerEvent]) -> list[AnswerEvent]:
        """The first text delta carries the tokens generated since the last one."""
        if not self._pending:
            return events
        for i, event in enumerate(events):
            if isinstance(event, TextDelta):
                events[i] = TextDelta(event.text, tuple(self._pending))
                self._pending = []
                break
        return events

    def _release(self, final: bool) -> list[AnswerEvent]:
        assert self._streamer is not None
        segments = self._streamer.segments
        out: list[AnswerEvent] = []
        while self._next < len(segments):
            segment = segments[self._next]
            if isinstance(segment, str):
                out.append(TextDelta(segment))
            elif not self.plan.forced:
                if final:  # auto: the first call holds everything back until the end
                    out += self._settle(segments[self._next :])
                    self._next = len(segments)
                break
            elif segment.raw_end == -1 and not final:
                break  # its text goes on; the streamer sets raw_end when it ends
            elif segment.valid() and self.plan.invalid(segment.name, segment.arguments) is None:
                out += self._call(segment)
            else:
                out.append(TextDelta(self._text_of(segment)))
            self._next += 1
        return out

    def _settle(self, rest: list[str | CallRecord]) -> list[AnswerEvent]:
        """auto, at the end: the held text from the first call on, as calls or as text."""
        records = [s for s in rest if isinstance(s, CallRecord)]
        whole = [r for r in records if r.valid()]
        kept = whole if self.plan.parallel else whole[:1]
        if not kept or any(self.plan.invalid(r.name, r.arguments) is not None for r in kept):
            return [TextDelta(self._raw[records[0].raw_start :])]
        out: list[AnswerEvent] = []
        for segment in rest:
            if isinstance(segment, str):
                out.append(TextDelta(segment))
            elif any(segment is k for k in kept):
                out += self._call(segment)
            elif not segment.valid():  # cut off, or not an object: what the model wrote
                out.append(TextDelta(self._text_of(segment)))
            # else: a further call without parallel calls, dropped
        return out

    def _text_of(self, record: CallRecord) -> str:
        """What the model wrote for a call that is not one."""
        end = record.raw_end if record.raw_end != -1 else len(self._raw)
        return self._raw[record.raw_start : end]

    def _call(self, record: CallRecord) -> list[AnswerEvent]:
        index, self._sent = self._sent, self._sent + 1
        return [
            ToolCallStart(index, record.id, record.name),
            ToolCallArgs(index, record.arguments),
            ToolCallEnd(index),
        ]


def _joined(events: list[AnswerEvent]) -> list[AnswerEvent]:
    """Neighbouring text deltas as one, empty ones dropped (fewer, larger chunks)."""
    out: list[AnswerEvent] = []
    for event in events:
        if isinstance(event, TextDelta):
            last = out[-1] if out else None
            if isinstance(last, TextDelta):
                out[-1] = TextDelta(last.text + event.text, last.logprobs + event.logprobs)
            elif event.text:
                out.append(event)
        else:
            out.append(event)
    return out


def whole_answer(stream: AnswerStream, done: Completion) -> Answer:
    """A whole choice: the fold of the events its stream would have sent."""
    return fold([*stream.feed(done.text, done.logprobs), *stream.finish(done)])
