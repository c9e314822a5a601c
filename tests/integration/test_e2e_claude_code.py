"""The real Claude Code CLI against the real server: ``claude -p "Say hello"`` through the
Anthropic Messages API must exit 0 with its answer.

The CLI is the npm package pinned in tests/node/package-lock.json, installed with
``npm ci --prefix tests/node`` (scripts/test.sh does it before pytest; this test does it
itself when it is missing). A CLI that cannot be installed or run is a failure, never a skip.

Claude Code's first request is about 49 KB of JSON, some 12k tokens of this model's
vocabulary (21k when the model name is a Claude one), so the server gets a 32k context.
It asks for ``max_tokens: 32000`` unless CLAUDE_CODE_MAX_OUTPUT_TOKENS says otherwise, and
takes an answer cut by that limit as an error (it continues it three times, then exits 1).
A base model seldom writes its end-of-turn marker, so the test's registry overlay gives the
embedded model a stop text (``stop = ["\n"]``: it answers in one line), as a user serving a
base model would; 256 tokens stay the ceiling.
docs/integrations.md has what the CLI sends.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from it_support import NODE_DIR, ServerProcess, node_cli, pinned_node_version

pytestmark = pytest.mark.integration

PACKAGE = "@anthropic-ai/claude-code"
MODEL = "gemma-3-270m"
CLI_TIMEOUT_S = 420

# Keeps the CLI to the one server it is pointed at: no telemetry, no auto-update, no error
# reports, no feature flags or other "non-essential" traffic (found in the CLI itself).
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
}


def pinned_version() -> str:
    return pinned_node_version(PACKAGE)


def _candidates() -> list[Path]:
    """The ``claude`` executables an install may have: npm's bin link (the postinstall
    copies the native binary over it) and the platform package's binary itself."""
    modules = NODE_DIR / "node_modules"
    platform_bins = sorted((modules / "@anthropic-ai").glob("claude-code-*/claude"))
    return [modules / ".bin" / "claude", *platform_bins]


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The pinned Claude Code CLI, installed into tests/node if it is not there yet."""
    return node_cli(PACKAGE, _candidates)


def test_the_pinned_cli_installs_and_runs(claude_cli: Path) -> None:
    """A CLI that npm cannot install fails the suite, never skips it."""
    done = subprocess.run(
        [str(claude_cli), "--version"], capture_output=True, timeout=60, check=False
    )
    assert done.stdout.decode().startswith(pinned_version()), done


@pytest.mark.timeout(CLI_TIMEOUT_S + 180)
def test_claude_code_says_hello(
    claude_cli: Path, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    overlay = tmp_path / "models.toml"
    overlay.write_text(f'[[models]]\nid = "{MODEL}"\nstop = ["\\n"]\n', encoding="utf-8")
    srv = server_factory("--n-ctx", "32768", "--models-file", str(overlay))
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home.as_posix(),
        "ANTHROPIC_BASE_URL": srv.base_url,
        "ANTHROPIC_AUTH_TOKEN": "sk-local",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256",
        **QUIET_ENV,
    }
    try:
        done = subprocess.run(
            [str(claude_cli), "-p", "Say hello", "--model", MODEL, "--output-format", "json"],
            env=env,
            cwd=home,
            capture_output=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"claude -p did not finish within {CLI_TIMEOUT_S}s; stderr: {exc.stderr!r}; "
            f"server log:\n{srv.output()[-4000:]}"
        )
    stdout = done.stdout.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    context = f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}\nserver:\n{srv.output()[-4000:]}"
    assert done.returncode == 0, f"claude -p exited {done.returncode}\n{context}"
    try:
        result = json.loads(stdout)
    except ValueError:
        raise AssertionError(f"claude -p printed no JSON\n{context}") from None
    assert result["type"] == "result" and result["subtype"] == "success", context
    assert result["is_error"] is False, context
    # One line of a base model's text; empty only if it began with the stop text.
    assert isinstance(result["result"], str), context
    assert "POST /v1/messages" in srv.output(), context
