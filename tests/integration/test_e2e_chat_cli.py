"""``python -m locallab_cpp chat`` in a real terminal (a pty driven by pexpect) against the
real server and the embedded model: streamed answers with their figures, the commands,
readline history, Ctrl-C stopping an answer (and the server freeing its slot), and
``--embedded`` starting a server of its own."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pexpect
import pytest
from it_support import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

PROMPT = ">>> "
ANSWER_S = 180.0
"""The first answer on a loaded 2-core machine (prompt, then up to max tokens)."""
FIGURES = r"\[\d+ tokens?[^\]\r\n]*prompt \d+ tokens, \d+ cached[^\]\r\n]*\]"
"""The line of figures after a whole answer."""


def _spawn(tmp_path: Path, *args: str, timeout: float = ANSWER_S) -> pexpect.spawn:
    env = dict(os.environ)
    env.update(
        NO_COLOR="1",  # plain text to match; colours are the Style's own unit test
        XDG_STATE_HOME=str(tmp_path / "state"),  # the history file of this test only
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO_ROOT),
        TERM="xterm",  # readline needs a terminal that has arrow keys
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "locallab_cpp", "chat", *args],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=timeout,
        dimensions=(40, 200),
    )
    child.logfile_read = open(tmp_path / "chat.log", "w", encoding="utf-8")  # noqa: SIM115
    return child


def _active(srv: ServerProcess) -> int:
    info = httpx.get(srv.base_url + "/system/info", timeout=30).json()
    return int(info["active_model"]["active_sequences"])


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _close(child: pexpect.spawn) -> None:
    if child.isalive():
        child.terminate(force=True)
    if child.logfile_read is not None:
        child.logfile_read.close()


def test_terminal_chat_streams_stops_and_runs_its_commands(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = server_factory("--n-ctx", "2048")
    child = _spawn(tmp_path, "--url", srv.base_url, "--temperature", "0", "--max-tokens", "24")
    try:
        child.expect(r"chat with gemma-3-270m at .*\(context \d+ tokens\)")
        child.expect_exact(PROMPT)

        # A whole answer: some text, then its figures on a line of their own.
        child.sendline("Count: 1, 2, 3,")
        child.expect(FIGURES)
        answered = str(child.before).split("Count: 1, 2, 3,", 1)[-1]
        assert answered.strip(), "no answer text before the figures"
        child.expect_exact(PROMPT)

        child.sendline("/system Tell a very long story.")
        child.expect_exact("(system prompt set)")
        child.expect_exact(PROMPT)

        # Commands.
        child.sendline("/system")
        child.expect_exact("system prompt: Tell a very long story.")
        child.expect_exact(PROMPT)
        child.sendline("/model")
        child.expect(r"\* gemma-3-270m\s+\(context \d+ tokens")
        child.expect_exact(PROMPT)
        child.sendline("/model no-such-model")
        child.expect_exact("no chat model 'no-such-model'")
        child.expect_exact(PROMPT)
        child.sendline("/save chat.json")
        child.expect(r"\(saved \d+ messages as \w+ to chat.json\)")
        child.expect_exact(PROMPT)
        child.sendline("/save chat.md")
        child.expect(r"\(saved \d+ messages as \w+ to chat.md\)")
        child.expect_exact(PROMPT)
        # The saved forms: a chat request's messages (system prompt first), and Markdown.
        saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
        assert saved["model"] == "gemma-3-270m"
        roles = [m["role"] for m in saved["messages"]]
        assert roles == ["system", "user", "assistant"], saved
        system, question, reply = (m["content"] for m in saved["messages"])
        assert system == "Tell a very long story." and question == "Count: 1, 2, 3,"
        shown, kept = " ".join(answered.split()), " ".join(reply.split())
        assert kept and kept[:20] in shown, (kept, shown)  # the answer saved is the one streamed
        markdown = (tmp_path / "chat.md").read_text(encoding="utf-8")
        assert markdown.startswith("# Chat with gemma-3-270m")
        assert "**System prompt:** Tell a very long story." in markdown
        assert "## You\n\nCount: 1, 2, 3," in markdown and "## gemma-3-270m\n" in markdown

        # History: the up arrow brings back the last line sent ("/save chat.md").
        child.send("\x1b[A")
        child.expect_exact("/save chat.md")
        child.send("\x15")  # Ctrl-U: clear the line again
        child.sendline("/clear")
        child.expect_exact("(conversation cleared)")
        child.expect_exact(PROMPT)
        child.sendline("/save after.json")
        child.expect(r"\(saved 0 messages")
        child.expect_exact(PROMPT)

        child.sendline("/exit")
        child.expect(pexpect.EOF, timeout=60)
        child.wait()
        assert child.exitstatus == 0, child.before
    finally:
        _close(child)
    history = (tmp_path / "state" / "locallab_cpp" / "chat_history").read_text(encoding="utf-8")
    assert "Count: 1, 2, 3," in history


def test_ctrl_c_stops_the_answer_not_the_chat(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = server_factory("--n-ctx", "2048")
    child = _spawn(tmp_path, "--url", srv.base_url, "--temperature", "0", "--max-tokens", "1500")
    try:
        child.expect_exact(PROMPT)
        child.sendline("Once upon a time")
        child.expect_exact("Once upon a time\r\n")  # the terminal's echo of the line
        child.expect(r"\S")  # the first streamed piece of the answer
        _wait(lambda: _active(srv) == 1, "the answer's generation on the server", 60)
        child.sendintr()
        child.expect(r"\[stopped\] \d+ tokens?")
        child.expect_exact(PROMPT)
        assert child.isalive()
        _wait(lambda: _active(srv) == 0, "the server to free the slot", 60)
        # The chat goes on: Ctrl-C at the prompt only says how to quit.
        child.sendintr()
        child.expect_exact("Ctrl-C stops an answer")
        child.expect_exact(PROMPT)
        child.sendline("/exit")
        child.expect(pexpect.EOF, timeout=60)
        child.wait()
        assert child.exitstatus == 0
    finally:
        _close(child)


def test_terminal_chat_embedded_starts_its_own_server(tmp_path: Path) -> None:
    child = _spawn(
        tmp_path,
        "--embedded",
        "--n-ctx",
        "1024",
        "--threads",
        "1",
        "--max-tokens",
        "8",
        timeout=600,
    )
    try:
        child.expect(r"chat with gemma-3-270m at http://127\.0\.0\.1:\d+")
        child.expect_exact(PROMPT)
        child.sendline("Hello")
        child.expect(FIGURES, timeout=ANSWER_S)
        child.expect_exact(PROMPT)
        child.sendeof()  # Ctrl-D ends the chat like /exit, and the server with it
        child.expect(pexpect.EOF, timeout=120)
        child.wait()
        assert child.exitstatus == 0
    finally:
        _close(child)
