"""What the terminal chat keeps and shows: the conversation, its saved forms, the token
figures under each answer and the terminal's colours."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


@dataclass
class Message:
    """One turn. ``reasoning`` is shown and saved but never sent back to the model (as
    OpenAI's API expects of reasoning)."""

    role: str
    content: str
    reasoning: str = ""


@dataclass
class Conversation:
    """The system prompt and the turns so far."""

    system: str = ""
    messages: list[Message] = field(default_factory=list)

    def request_messages(self) -> list[dict[str, str]]:
        """The ``messages`` of the next request: the system prompt, then every turn."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": m.role, "content": m.content} for m in self.messages]

    def clear(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self.messages.clear()

    def to_json(self, model: str | None) -> str:
        """The conversation as JSON: ``model`` and ``messages`` as a chat completion request
        has them (so the file can be sent again), with each answer's reasoning kept in
        ``reasoning_content``, and when it was saved."""
        messages: list[dict[str, str]] = (
            [{"role": "system", "content": self.system}] if self.system else []
        )
        for m in self.messages:
            item = {"role": m.role, "content": m.content}
            if m.reasoning:
                item["reasoning_content"] = m.reasoning
            messages.append(item)
        saved = datetime.now(UTC).isoformat(timespec="seconds")
        document = {"model": model, "saved_at": saved, "messages": messages}
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"

    def to_markdown(self, model: str | None) -> str:
        """The conversation as Markdown: a heading per turn, reasoning as a quote."""
        parts = [f"# Chat with {model or 'the server'}\n"]
        if self.system:
            parts.append(f"**System prompt:** {self.system}\n")
        for m in self.messages:
            parts.append(f"## {'You' if m.role == 'user' else model or m.role}\n")
            if m.reasoning:
                quoted = "\n".join(f"> {line}" for line in m.reasoning.strip().splitlines())
                parts.append(f"{quoted}\n")
            parts.append(f"{m.content.strip()}\n")
        return "\n".join(parts)

    def save(self, path: Path, model: str | None) -> str:
        """Write the conversation to ``path``: Markdown if it ends in ``.md``, else JSON.
        Returns the format written."""
        markdown = path.suffix.lower() in (".md", ".markdown")
        text = self.to_markdown(model) if markdown else self.to_json(model)
        path.write_text(text, encoding="utf-8")
        return "Markdown" if markdown else "JSON"


@dataclass
class Figures:
    """Timings and token counts of one answer (``time.monotonic()`` seconds)."""

    started: float
    first_token: float | None = None
    ended: float | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    pieces: int = 0

    def line(self) -> str:
        """``12 tokens, 41.3 tokens/s · prompt 85 tokens, 80 cached · first token 0.21 s``.

        Tokens per second run from the first token to the end, so they measure generation,
        not the prompt's processing (which the time to the first token shows).
        """
        tokens = self.completion_tokens if self.completion_tokens is not None else self.pieces
        parts = [f"{tokens} token{'' if tokens == 1 else 's'}"]
        if self.first_token is not None and self.ended is not None and tokens > 1:
            span = self.ended - self.first_token
            if span > 0:
                parts[0] += f", {(tokens - 1) / span:.1f} tokens/s"
        if self.prompt_tokens is not None:
            parts.append(f"prompt {self.prompt_tokens} tokens, {self.cached_tokens or 0} cached")
        if self.first_token is not None:
            parts.append(f"first token {self.first_token - self.started:.2f} s")
        return " · ".join(parts)


class Style:
    """ANSI styles, only where the output is a terminal and NO_COLOR is not set
    (https://no-color.org: any non-empty value turns colours off)."""

    def __init__(self, out: TextIO, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        isatty = getattr(out, "isatty", None)
        tty = bool(isatty and isatty())
        self.enabled = tty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def dim(self, text: str) -> str:
        """Faint text: reasoning and the figures."""
        return self._wrap("2", text)

    def error(self, text: str) -> str:
        """Red text: an error line."""
        return self._wrap("31", text)

    def reset(self) -> str:
        """What ends any style left open (an answer cut off mid-piece)."""
        return "\033[0m" if self.enabled else ""
