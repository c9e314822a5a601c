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

.venv/bin/python -m ruff check locallab_cpp tests scripts
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
