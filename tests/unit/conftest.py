"""Fixtures of the unit tests: a tiny registry of dummy GGUF files and apps over FakeEngine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Import the working tree's package even when pytest is not started from the repo root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fakes import FakeFactory  # noqa: E402
from helpers import make_client, write_registry  # noqa: E402
from litestar.testing import TestClient  # noqa: E402


@pytest.fixture(autouse=True)
def _no_locallab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own LOCALLAB_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("LOCALLAB_"):
            monkeypatch.delenv(name)


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    """A models.toml with three file entries; alpha and beta exist, gone does not."""
    return write_registry(tmp_path)


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def client(models_file: Path, factory: FakeFactory) -> Iterator[TestClient[Any]]:
    """An app that loaded the default model (alpha) at start."""
    with make_client(models_file, factory) as c:
        yield c


@pytest.fixture
def empty_client(models_file: Path, factory: FakeFactory) -> Iterator[TestClient[Any]]:
    """An app started with no model loaded (no_model=True)."""
    with make_client(models_file, factory, no_model=True) as c:
        yield c
