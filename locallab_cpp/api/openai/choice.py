"""One chat choice read out of its generated text: reasoning split off, tool calls found,
checked and released. The stream sends the deltas as they come; the whole answer is the
fold of the very same deltas (:func:`whole_choice`), so the two cannot disagree.

Rules, the same for both (docs/api.md, "Tool calls"):

* A call is released only once its text ended (its arguments finished), whole: id, type
  and name first, then its arguments in one fragment. A call cut off by the token limit is
  no call: the text the model wrote for it stays in ``content``.
* ``required`` / a named function (a grammar forces the calls): each call is checked alone
  when it ends; one that does not validate is text too.
* ``auto``: everything from the first call on is held until the generation ends. Then
  either every kept call validates and they are sent as calls, with the text beside them as
  content, or none is a call and the text from the first call on, exactly as the model
  wrote it, is content.
* ``finish_reason`` is "tool_calls" when calls were sent, else the engine's: a call cut
  off alone is "length".
"""

from __future__ import annotations

from dataclasses import dataclass

from locallab_cpp.api.openai.common import chat_logprobs
from locallab_cpp.api.openai.responses import (
    AssistantMessage,
    ChatChoice,
    ChatDelta,
    FunctionCallOut,
    FunctionDelta,
    ToolCallDeltaOut,
    ToolCallOut,
)
from locallab_cpp.api.openai.tooling import ToolPlan
from locallab_cpp.engine.types import Completion, FinishReason
from locallab_cpp.serving.reasoning import ReasoningSplitter
from locallab_cpp.serving.tools import CallRecord, ToolCallFormat


@dataclass
class ChoiceState:
    """One chat choice as its text arrives; :meth:`feed` and :meth:`finish` give deltas."""

    index: int
    plan: ToolPlan
    fmt: ToolCallFormat | None
    thinking: bool = False
    """The prompt opened a ``<think>``: the output starts inside the reasoning."""

    def __post_init__(self) -> None:
        self.splitter = ReasoningSplitter(started_in_reasoning=self.thinking)
        self.streamer = self.fmt.streamer() if self.fmt is not None and self.plan.active else None
        self._raw = ""  # the answer text after the reasoning, as the model wrote it
        self._next = 0  # the first of the streamer's segments not yet released
        self._sent = 0  # tool calls sent so far

    def feed(self, text: str) -> list[ChatDelta]:
        """Deltas for newly generated text (perhaps none while something is held back)."""
        reasoning, answer = self.splitter.feed(text)
        return self._deltas(reasoning, answer, final=False)

    def finish(self, reason: FinishReason) -> tuple[list[ChatDelta], FinishReason]:
        """The engine ended the choice with ``reason``: the deltas of what was held back,
        and the choice's finish_reason."""
        reasoning, answer = self.splitter.finish()
        deltas = self._deltas(reasoning, answer, final=True)
        # Calls sent are whole and valid: the client acts on them even when the limit cut
        # the text after them (a forced parallel grammar lets a small model go on writing).
        return deltas, "tool_calls" if self._sent else reason

    # -- releasing ------------------------------------------------------------------------

    def _deltas(self, reasoning: str, answer: str, *, final: bool) -> list[ChatDelta]:
        deltas = [ChatDelta(reasoning_content=reasoning)] if reasoning else []
        if self.streamer is None:
            if answer:
                deltas.append(ChatDelta(content=answer))
            return deltas
        self._raw += answer
        if answer:
            self.streamer.feed(answer)
        if final:
            self.streamer.finish()
        return deltas + _joined(self._release(final))

    def _release(self, final: bool) -> list[ChatDelta]:
        assert self.streamer is not None
        segments = self.streamer.segments
        out: list[ChatDelta] = []
        while self._next < len(segments):
            segment = segments[self._next]
            if isinstance(segment, str):
                out.append(ChatDelta(content=segment))
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
                out.append(ChatDelta(content=self._text_of(segment)))
            self._next += 1
        return out

    def _settle(self, rest: list[str | CallRecord]) -> list[ChatDelta]:
        """auto, at the end: the held text from the first call on, as calls or as text."""
        records = [s for s in rest if isinstance(s, CallRecord)]
        whole = [r for r in records if r.valid()]
        kept = whole if self.plan.parallel else whole[:1]
        if not kept or any(self.plan.invalid(r.name, r.arguments) is not None for r in kept):
            return [ChatDelta(content=self._raw[records[0].raw_start :])]
        out: list[ChatDelta] = []
        for segment in rest:
            if isinstance(segment, str):
                out.append(ChatDelta(content=segment))
            elif any(segment is k for k in kept):
                out += self._call(segment)
            elif not segment.valid():  # cut off, or not an object: what the model wrote
                out.append(ChatDelta(content=self._text_of(segment)))
            # else: a further call without parallel_tool_calls, dropped as before
        return out

    def _text_of(self, record: CallRecord) -> str:
        """What the model wrote for a call that is not one."""
        end = record.raw_end if record.raw_end != -1 else len(self._raw)
        return self._raw[record.raw_start : end]

    def _call(self, record: CallRecord) -> list[ChatDelta]:
        """A call's two deltas: id, type, name and "" (OpenAI's first), then its arguments."""
        index, self._sent = self._sent, self._sent + 1
        head = ToolCallDeltaOut(
            index=index,
            id=record.id,
            type="function",
            function=FunctionDelta(name=record.name, arguments=""),
        )
        body = ToolCallDeltaOut(index=index, function=FunctionDelta(arguments=record.arguments))
        return [ChatDelta(tool_calls=[head]), ChatDelta(tool_calls=[body])]


def _joined(deltas: list[ChatDelta]) -> list[ChatDelta]:
    """Neighbouring content deltas as one (fewer, larger chunks; the same text)."""
    out: list[ChatDelta] = []
    for delta in deltas:
        if delta.content is not None and out and out[-1].content is not None:
            out[-1] = ChatDelta(content=out[-1].content + delta.content)
        elif delta.content != "":
            out.append(delta)
    return out


def whole_choice(
    index: int,
    done: Completion,
    plan: ToolPlan,
    fmt: ToolCallFormat | None,
    *,
    logprobs: bool,
    thinking: bool = False,
) -> ChatChoice:
    """A whole choice: the fold of the deltas its stream would have sent."""
    state = ChoiceState(index, plan, fmt, thinking)
    deltas = state.feed(done.text)
    more, reason = state.finish(done.finish_reason)
    reasoning, content = "", ""
    calls: list[ToolCallOut] = []
    for delta in [*deltas, *more]:
        reasoning += delta.reasoning_content or ""
        content += delta.content or ""
        for part in delta.tool_calls or ():
            function = part.function or FunctionDelta()
            if part.index == len(calls):
                calls.append(
                    ToolCallOut(
                        id=part.id or "",
                        type="function",
                        function=FunctionCallOut(name=function.name or "", arguments=""),
                    )
                )
            calls[part.index].function.arguments += function.arguments or ""
    return ChatChoice(
        index=index,
        message=AssistantMessage(
            role="assistant",
            # Only calls: content is null, as OpenAI's; text beside them stays.
            content=None if calls and not content.strip() else content,
            reasoning_content=reasoning or None,
            tool_calls=calls or None,
        ),
        logprobs=chat_logprobs(done.logprobs) if logprobs else None,
        finish_reason=reason,
    )
