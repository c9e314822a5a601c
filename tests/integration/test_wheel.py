"""The project installs as a wheel (not only ``pip install -e``): a wheel built from this
checkout, installed into a fresh virtual environment, finds its model registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    # A fresh home for the user registry: only the package's own models.toml is read.
    env["XDG_CONFIG_HOME"] = str(cwd / "config")
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.timeout(1200)
def test_wheel_install_finds_its_registry(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        tmp_path,
    )
    [wheel] = dist.glob("locallab_cpp-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    # Dependencies come from the index (llama-cpp-python from pip's wheel cache once built).
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path)
    where = _run([str(python), "-c", "import locallab_cpp; print(locallab_cpp.__file__)"], tmp_path)
    assert str(venv) in where.stdout, where.stdout  # the installed copy, not this checkout
    listed = _run([str(python), "-m", "locallab_cpp", "models", "list"], tmp_path)
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert "gemma-3-270m" in ids, listed.stdout
    assert len(ids) >= 5, listed.stdout
