"""The fleet benchmark's pieces that need no server (scripts/bench/fleet.py): the LiteLLM
proxy it starts (one deployment per server, least-busy, offline) and its section of
docs/benchmarks.md (replaced between its markers, the rest kept)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def fleet() -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("bench.fleet")


def test_the_proxy_routes_one_model_to_every_server_offline(
    fleet: ModuleType, tmp_path: Path
) -> None:
    proxy = fleet._litellm([5001, 5002], "sk-test", tmp_path)
    config_path = Path(proxy.cmd[proxy.cmd.index("--config") + 1])
    config = config_path.read_text(encoding="utf-8")
    assert config.count("model_name: gemma-3-270m") == 2
    assert "api_base: http://127.0.0.1:5001/v1" in config
    assert "api_base: http://127.0.0.1:5002/v1" in config
    assert "routing_strategy: least-busy" in config
    assert proxy.cmd[proxy.cmd.index("--telemetry") + 1] == "False"
    env = proxy._env
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["LITELLM_MASTER_KEY"] == "sk-test"
    assert "DATABASE_URL" not in env


def test_the_section_is_replaced_between_its_markers(fleet: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# B\nbefore\n{fleet.START}\nold figures\n{fleet.END}\nafter\n")
    fleet.write_marked(doc, fleet.SECTION, "new figures\n")
    text = doc.read_text()
    assert "old figures" not in text
    assert text == f"# B\nbefore\n{fleet.START}\nnew figures\n{fleet.END}\nafter\n"


def test_the_section_is_appended_when_the_markers_are_missing(
    fleet: ModuleType, tmp_path: Path
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n")
    fleet.write_marked(doc, fleet.SECTION, "figures\n")
    assert doc.read_text() == f"# B\n\n{fleet.START}\nfigures\n{fleet.END}\n"
