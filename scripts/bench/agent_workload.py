"""The requests of the agent-cache phase: an agent's system prompt with its tools, and
sessions of turns that each append a tool result and a user message.

The system prompt is Claude Code's (tests/fixtures/claude_code_request.json: its system
blocks, then its tool definitions written out as JSON), grown to the target size with more
tool definitions of the same shapes under other names (agents with MCP servers send dozens),
or cut to it for ``--quick``. The tools travel inside the system text, not in a ``tools``
field: the embedded GGUF has no chat template of its own, and llama-server's fallback
template drops the tools, so a ``tools`` field would make the two servers compute prompts of
different sizes (docs/benchmarks.md, "Agent workload"). With the tools in the text, both
render the same messages with a Gemma template (ours: the registry's ``chat_format``; theirs:
``--no-jinja --chat-template gemma``) and their prompt token counts agree to a few tokens.

Each turn after the first appends the previous answer, a tool result of a few hundred
tokens (a file listing or a source file, different for every session and turn) and a user
message, as an agent's loop does: the new tokens of a turn are only those.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "claude_code_request.json"
TOOL_RESULT_LINES = 10  # about 330 tokens of the embedded model's tokenizer

FIRST_ASKS = {
    "A": "The repository is a billing service. Find where invoices are rounded and explain it.",
    "B": "The repository is a chat bot. Find why messages are sometimes sent twice.",
    "C": "The repository is a CLI for backups. List the commands it offers and what they do.",
}
NEXT_ASKS = (
    "Read the file that looks most relevant and summarise it.",
    "Now look at the tests for it and say which case is missing.",
    "Check the helper it calls and say whether it handles errors.",
    "Search for other callers of that function.",
    "Propose a one-line fix and say where it goes.",
    "Say how you would test the fix.",
)


@dataclass(frozen=True)
class Workload:
    """The phase's sizes: the system prompt's tokens and the turns of a session."""

    system_tokens: int
    turns: int
    third_session_turns: int
    max_tokens: int = 16


def _fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _tool_text(tool: dict[str, Any], name: str) -> str:
    spec = {
        "name": name,
        "description": tool.get("description", ""),
        "input_schema": tool.get("input_schema", {}),
    }
    return json.dumps(spec, indent=1, ensure_ascii=False)


def system_prompt(target_tokens: int, count: Callable[[str], int]) -> str:
    """Claude Code's system text and tools, grown or cut to about ``target_tokens``."""
    body = _fixture()
    system = body["system"]
    texts = [system] if isinstance(system, str) else [b.get("text", "") for b in system]
    tools = [t for t in body.get("tools") or () if "input_schema" in t]
    pieces = [p for text in texts for p in text.split("\n\n") if p.strip()]
    pieces.append("# Tools\n\nYou can call these tools; each is given as JSON.")
    pieces += [_tool_text(t, t["name"]) for t in tools]
    server = 0
    while True:  # more tools under MCP-style names until the target is reached
        server += 1
        pieces += [_tool_text(t, f"mcp__workspace{server}__{t['name']}") for t in tools]
        if sum(count(p) for p in pieces) >= 2 * target_tokens or server > 50:
            break
    kept: list[str] = []
    total = 0
    for piece in pieces:
        n = count(piece) + 1
        if total + n > target_tokens and kept:
            break
        kept.append(piece)
        total += n
    return "\n\n".join(kept)


def tool_result(session: str, turn: int) -> str:
    """A tool's output of a few hundred tokens, different for each session and turn."""
    if turn % 2:
        lines = [
            f"src/{session.lower()}{turn}/module_{i:02d}.py    {1200 + 37 * i} bytes"
            for i in range(TOOL_RESULT_LINES)
        ]
        return f"$ ls -l src/{session.lower()}{turn}\n" + "\n".join(lines)
    lines = [
        f"{i + 1:4d}  def step_{session.lower()}_{turn}_{i}(value: int) -> int:"
        f"  return value * {i + 3} // {turn + 1}"
        for i in range(TOOL_RESULT_LINES)
    ]
    return f"File src/{session.lower()}/core_{turn}.py:\n" + "\n".join(lines)


def first_body(system: str, session: str, workload: Workload) -> dict[str, Any]:
    """Turn 1 of a session (Anthropic Messages shape, streamed, greedy)."""
    return {
        "model": "gemma-3-270m",
        "system": system,
        "messages": [{"role": "user", "content": [{"type": "text", "text": FIRST_ASKS[session]}]}],
        "max_tokens": workload.max_tokens,
        "temperature": 0,
        "stream": True,
    }


def next_body(body: dict[str, Any], answer: str, session: str, turn: int) -> dict[str, Any]:
    """Turn ``turn`` (2, 3, ...): the conversation, the last answer, a tool result, a user
    message. The tool result and the ask make one user message, since a Gemma template
    wants the roles to alternate."""
    nxt = copy.deepcopy(body)
    ask = NEXT_ASKS[(turn - 2) % len(NEXT_ASKS)]
    result = tool_result(session, turn)
    nxt["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": answer.strip() or "."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"<tool_result>\n{result}\n</tool_result>"},
                {"type": "text", "text": ask},
            ],
        },
    ]
    return nxt
