#!/usr/bin/env bash
# Install locallab_cpp with its test tools into .venv and run every check:
# ruff, mypy, then the unit and end-to-end tests (the latter start the real server
# with the embedded model). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# llama-cpp-python builds from source the first time (about 5-10 minutes on 2 cores);
# pip caches the wheel, so later installs take seconds.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

# LiteLLM's proxy for tests/integration/test_e2e_litellm.py, in a virtual environment of its
# own: it pins many packages (pydantic, httpx, openai...) that must not replace ours. The pin
# is tests/litellm-requirements.txt; pip checks it each run (seconds when nothing changed,
# about a minute from pip's cache on a fresh clone).
if [ ! -x .venv-litellm/bin/python ]; then
    "$PYTHON" -m venv .venv-litellm
fi
.venv-litellm/bin/python -m pip install --quiet -r tests/litellm-requirements.txt

# The real Claude Code CLI for tests/integration/test_e2e_claude_code.py, pinned by
# tests/node/package-lock.json. Installed again only when the lockfile changed (a stamp in
# node_modules says which one it is), from npm's cache when it has the package. Without npm,
# the test itself fails and says so.
if command -v npm >/dev/null 2>&1; then
    stamp=tests/node/node_modules/.locallab-installed-lock
    if ! cmp -s tests/node/package-lock.json "$stamp"; then
        npm ci --prefix tests/node --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null
        cp tests/node/package-lock.json "$stamp"
    fi
else
    echo "scripts/test.sh: npm not found; the Claude Code end-to-end test will fail" >&2
fi

# Debian's chromium and its driver for tests/integration/test_e2e_web.py (the chat page in
# a real browser); installed only when missing. If they cannot be, that test fails and says so.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo_cmd="sudo"
    fi
    if command -v apt-get >/dev/null 2>&1; then
        $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null \
            || echo "scripts/test.sh: could not install chromium; the browser test will fail" >&2
    else
        echo "scripts/test.sh: no apt-get for chromium; the browser test will fail" >&2
    fi
fi

# llama.cpp's RPC backend for tests/integration/test_e2e_rpc.py, built from the installed
# llama-cpp-python's own llama.cpp (about a minute on 2 cores, kept under ~/.cache; nothing
# is built when it is there). Without it, that test fails and says so.
PYTHON=.venv/bin/python scripts/build_rpc.sh >/dev/null \
    || echo "scripts/test.sh: could not build the RPC backend; the RPC test will fail" >&2

.venv/bin/python -m ruff check locallab_cpp tests scripts
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
