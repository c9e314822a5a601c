"""Reasoning split from content: whole and streamed (any chunking) agree."""

from __future__ import annotations

import random

import pytest

from locallab_cpp.serving.reasoning import (
    ReasoningSplitter,
    prompt_opens_reasoning,
    split_reasoning,
)

# (text, started_in_reasoning, reasoning, content)
CASES: list[tuple[str, bool, str | None, str]] = [
    # Qwen 3 / DeepSeek R1, thinking on
    ("<think>\nThe user greets me.\n</think>\n\nHello!", False, "The user greets me.", "Hello!"),
    # the template opened <think> in the prompt
    ("The user greets me.\n</think>\n\nHello!", True, "The user greets me.", "Hello!"),
    # Qwen 3 with thinking off writes an empty block
    ("<think>\n\n</think>\n\nHello!", False, None, "Hello!"),
    ("Hello!", False, None, "Hello!"),
    ("  Hello <think> is content here", False, None, "  Hello <think> is content here"),
    ("<think>a </think> b </think> c", False, "a", "b </think> c"),
    # cut off while reasoning: all of it is reasoning
    ("<think>\nStill thinking", False, "Still thinking", ""),
    ("Still thinking", True, "Still thinking", ""),
    ("<thi", False, None, "<thi"),
    ("", False, None, ""),
    ("<think>x</think>", False, "x", ""),
    ("a\n\n</thinking> b", True, "a\n\n</thinking> b", ""),
]


@pytest.mark.parametrize(("text", "started", "reasoning", "content"), CASES)
def test_split_reasoning(text: str, started: bool, reasoning: str | None, content: str) -> None:
    assert split_reasoning(text, started_in_reasoning=started) == (reasoning, content)


@pytest.mark.parametrize(("text", "started", "reasoning", "content"), CASES)
def test_streaming_equals_split(
    text: str, started: bool, reasoning: str | None, content: str
) -> None:
    rng = random.Random(text)
    chunkings = [list(text), [text]]
    for _ in range(10):
        cuts = sorted({rng.randrange(len(text) + 1) for _ in range(4)})
        chunkings.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    for pieces in chunkings:
        splitter = ReasoningSplitter(started_in_reasoning=started)
        r_parts, c_parts = [], []
        for piece in pieces:
            r, c = splitter.feed(piece)
            r_parts.append(r)
            c_parts.append(c)
        r, c = splitter.finish()
        r_parts.append(r)
        c_parts.append(c)
        assert ("".join(r_parts) or None, "".join(c_parts)) == (reasoning, content), pieces


def test_markers_are_held_back_and_text_released() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<thi") == ("", "")
    # whitespace after <think> is dropped; trailing whitespace waits for what follows
    assert splitter.feed("nk>\nStep one. ") == ("Step one.", "")
    assert splitter.feed("Step two.</th") == (" Step two.", "")
    assert splitter.feed("ink>\n\nAnswer") == ("", "Answer")
    assert splitter.saw_reasoning


def test_prompt_opens_reasoning() -> None:
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")
