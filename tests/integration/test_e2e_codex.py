"""The real Codex CLI against the real server: ``codex exec "Say hello"`` through the
Responses API must exit 0 and print the model's text.

The CLI is the npm package pinned in tests/node/package-lock.json (``npm ci --prefix
tests/node``, which scripts/test.sh runs; this test runs it when the CLI is missing). A CLI
that cannot be installed or run is a failure, never a skip.

Codex's first request is about 40 KB of JSON, some 8.9k tokens of this model's vocabulary
(docs/integrations.md, "Codex CLI"), so the server keeps its default context (the model's
trained 32768). Codex sends no token limit and treats a response cut short as an error,
so the embedded base model gets a stop text from a registry overlay (it answers in one
line) and Codex short instructions of its own (``model_instructions_file``); the rest of
the prompt (tools, environment) is Codex's own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from it_support import NODE_DIR, REPO_ROOT, ServerProcess, node_cli, pinned_node_version

pytestmark = pytest.mark.integration

PACKAGE = "@openai/codex"
CLI_TIMEOUT_S = 420

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from capture_codex import codex_config_toml, codex_env  # noqa: E402


def pinned_version() -> str:
    return pinned_node_version(PACKAGE)


@pytest.fixture(scope="session")
def codex_cli() -> Path:
    """The pinned Codex CLI, installed into tests/node if it is not there yet."""
    return node_cli(PACKAGE, lambda: [NODE_DIR / "node_modules" / ".bin" / "codex"])


@pytest.mark.timeout(CLI_TIMEOUT_S + 180)
def test_codex_exec_says_hello(
    codex_cli: Path, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # A base model seldom writes its end-of-turn marker and Codex takes a response cut by a
    # token limit as an error: the registry overlay gives the model a stop text, as a user
    # serving a base model would (one line of answer).
    overlay = tmp_path / "models.toml"
    overlay.write_text('[[models]]\nid = "gemma-3-270m"\nstop = ["\\n"]\n', encoding="utf-8")
    srv = server_factory("--models-file", str(overlay))
    home = tmp_path / "home"
    home.mkdir()
    env = codex_env(str(home))
    codex_home = Path(env["CODEX_HOME"])
    codex_home.mkdir()
    instructions = home / "instructions.md"
    instructions.write_text(
        "You are a helpful assistant. Answer the user in one short sentence.\n", encoding="utf-8"
    )
    config = f'model_instructions_file = "{instructions.as_posix()}"\n'
    config += codex_config_toml(srv.base_url + "/v1")
    (codex_home / "config.toml").write_text(config, encoding="utf-8")
    try:
        done = subprocess.run(
            [str(codex_cli), "exec", "--skip-git-repo-check", "Say hello"],
            env=env,
            cwd=home,
            capture_output=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"codex exec did not finish within {CLI_TIMEOUT_S}s; stderr: {exc.stderr!r}; "
            f"server log:\n{srv.output()[-4000:]}"
        )
    stdout = done.stdout.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    context = f"stdout: {stdout[-2000:]}\nstderr: {stderr[-3000:]}\nserver:\n{srv.output()[-3000:]}"
    assert done.returncode == 0, f"codex exec exited {done.returncode}\n{context}"
    assert stdout.strip(), f"codex exec printed no answer\n{context}"
    assert "POST /v1/responses" in srv.output(), context


def test_the_pinned_codex_cli_is_installed(codex_cli: Path) -> None:
    """The CLI the test above drives installs from npm and runs (a failure, never a skip)."""
    done = subprocess.run(
        [str(codex_cli), "--version"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0 and pinned_version() in done.stdout.decode(errors="replace")
