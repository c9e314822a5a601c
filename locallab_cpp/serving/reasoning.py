"""Reasoning ("thinking") text split from the answer: ``<think>...</think>`` at the start
of a generation (Qwen 3, QwQ, DeepSeek R1 distills).

Templates of such models may open ``<think>`` in the prompt, so the output starts inside
the reasoning and only closes it (:func:`prompt_opens_reasoning` tells). A ``<think>`` later
in the answer is content: reasoning only leads a generation. Whitespace around the
reasoning (after ``<think>``, before and after ``</think>``) is dropped.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"
_WS = " \t\r\n"


def _partial(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker`` (shorter than it)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


def prompt_opens_reasoning(prompt: str) -> bool:
    """The rendered prompt leaves a ``<think>`` open, so the output starts inside reasoning
    (a template that closes it in the prompt, as Qwen 3 does without thinking, does not)."""
    return prompt.rfind(OPEN) > prompt.rfind(CLOSE)


class ReasoningSplitter:
    """Splits a generation fed in pieces into reasoning and content, holding back text that
    may be the start of a marker."""

    def __init__(self, *, started_in_reasoning: bool = False) -> None:
        # "start": not known yet whether the output opens with <think>; "reasoning"; "content".
        self._state = "reasoning" if started_in_reasoning else "start"
        self._lead = started_in_reasoning  # drop whitespace at the start of the reasoning
        self._strip = False  # drop whitespace at the start of the content
        self._buf = ""
        self.saw_reasoning = started_in_reasoning
        """Reasoning was found (a block, even an empty one)."""

    def feed(self, text: str) -> tuple[str, str]:
        """The next piece of text: (reasoning to show now, content to show now)."""
        self._buf += text
        return self._run(final=False)

    def finish(self) -> tuple[str, str]:
        """The generation ended: release what was held back (an unclosed block's text is
        reasoning; an unfinished marker at the start is content)."""
        return self._run(final=True)

    def _run(self, final: bool) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        if self._state == "start":
            head = self._buf.lstrip(_WS)
            if head.startswith(OPEN):
                self._state, self._lead, self.saw_reasoning = "reasoning", True, True
                self._buf = head[len(OPEN) :]
            elif final or not OPEN.startswith(head):
                self._state = "content"
            else:
                return "", ""
        if self._state == "reasoning":
            if self._lead:
                self._buf = self._buf.lstrip(_WS)
                self._lead = not self._buf
            end = self._buf.find(CLOSE)
            if end != -1:
                reasoning.append(self._buf[:end].rstrip(_WS))
                self._buf = self._buf[end + len(CLOSE) :]
                self._state, self._strip = "content", True
            elif final:
                reasoning.append(self._buf.rstrip(_WS))
                self._buf = ""
            else:
                # Hold back a partial </think> and trailing whitespace (dropped if the
                # block closes next).
                keep = len(self._buf) - _partial(self._buf, CLOSE)
                cut = len(self._buf[:keep].rstrip(_WS))
                reasoning.append(self._buf[:cut])
                self._buf = self._buf[cut:]
        if self._state == "content":
            if self._strip:
                self._buf = self._buf.lstrip(_WS)
                self._strip = not self._buf
            content.append(self._buf)
            self._buf = ""
        return "".join(reasoning), "".join(content)


def split_reasoning(text: str, *, started_in_reasoning: bool = False) -> tuple[str | None, str]:
    """(reasoning, content) of a whole generation; reasoning is None when there is no
    reasoning block (or it is empty). Streaming the same text through
    :class:`ReasoningSplitter` gives the same pieces."""
    splitter = ReasoningSplitter(started_in_reasoning=started_in_reasoning)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    reasoning = r1 + r2
    return (reasoning or None), c1 + c2
