"""The agent-cache benchmark's workload and report (scripts/bench/agent_*.py), without
servers: the prompt reaches its size, turns grow by a tool result and an ask, the targets
read the turns right, and the plot is an SVG with a line per server."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _import(name: str) -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    import importlib

    return importlib.import_module(name)


@pytest.fixture(scope="module")
def workload() -> ModuleType:
    return _import("bench.agent_workload")


@pytest.fixture(scope="module")
def cache() -> ModuleType:
    return _import("bench.agent_cache")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return _import("bench.agent_report")


def words(text: str) -> int:
    """A stand-in tokenizer: one token a word."""
    return len(text.split())


@pytest.mark.parametrize("target", [500, 4000, 16000])
def test_system_prompt_reaches_its_size_with_the_tools(workload: ModuleType, target: int) -> None:
    text = workload.system_prompt(target, words)
    assert 0.9 * target <= words(text) <= target
    if target >= 16000:  # past Claude Code's own tools: more under other names
        assert '"name": "mcp__workspace1__' in text


def test_a_turn_appends_answer_tool_result_and_ask(workload: ModuleType) -> None:
    w = workload.Workload(system_tokens=100, turns=3, third_session_turns=2)
    one = workload.first_body("SYSTEM", "A", w)
    two = workload.next_body(one, " an answer ", "A", 2)
    assert one["messages"] == two["messages"][:1]  # the earlier turns stay as they were
    assert [m["role"] for m in two["messages"]] == ["user", "assistant", "user"]
    assert two["messages"][1]["content"][0]["text"] == "an answer"
    result = two["messages"][2]["content"][0]["text"]
    assert result.startswith("<tool_result>") and words(result) > 100
    assert workload.tool_result("A", 2) != workload.tool_result("B", 2)
    assert two["system"] == "SYSTEM" and two["stream"] is True


def _side(cache: ModuleType, name: str, rows: list[tuple[str, int, float, int, int]]) -> object:
    side = cache.Side(name, ["server", "--port", "{port}"])
    side.turns = [cache.Turn(s, n, ttft, ttft + 0.5, prompt, cached) for s, n, ttft, prompt,
                  cached in rows]  # fmt: skip
    side.peak_rss = 400 * 2**20 if name == "ours" else 500 * 2**20
    return side


def test_targets_read_the_turns(cache: ModuleType, report: ModuleType) -> None:
    mine = [("A", 1, 40.0, 16000, 0), ("B", 1, 2.0, 16010, 15990), ("A", 2, 1.0, 16400, 16020)]
    other = [("A", 1, 44.0, 16000, 0), ("B", 1, 44.0, 16010, 0), ("A", 2, 40.0, 16400, 0)]
    ours = _side(cache, "ours", [*mine, ("C", 1, 8.0, 16000, 15900)])
    theirs = _side(cache, "llama-server", [*other, ("C", 1, 44.0, 16000, 0)])
    assert report.only_new_tokens(ours) == (1, 1)
    assert report.only_new_tokens(theirs) == (0, 1)
    rows = report.target_rows(ours, theirs)
    b1 = next(r for r in rows if r.startswith("| B1"))
    c1 = next(r for r in rows if r.startswith("| C1"))
    assert "0.050x" in b1 and b1.endswith("PASS |")
    assert "0.200x" in c1 and c1.endswith("PASS |")
    speed = next(r for r in rows if r.startswith("| Workload time"))
    assert "3.28x faster" in speed and speed.endswith("PASS |")
    assert next(r for r in rows if r.startswith("| Peak RSS")).endswith("PASS |")


def test_the_plot_has_a_line_per_server_broken_at_the_restart(
    cache: ModuleType, report: ModuleType, tmp_path: Path
) -> None:
    rows = [("A", 1, 30.0, 1, 0), ("B", 1, 0.2, 1, 0), ("C", 1, 3.0, 1, 0), ("C", 2, 0.3, 1, 0)]
    sides = [_side(cache, "ours", rows), _side(cache, "llama-server", rows)]
    path = tmp_path / "plot.svg"
    report.write_plot(path, sides, 16000)
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 4  # two servers x (before, after the restart)
    assert len(root.findall(f"{ns}circle")) == 8
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert {"ours", "llama-server", "restart", "A1", "C2"} <= set(texts)


def test_llama_server_mirrors_ours_with_its_ram_cache_at_default(cache: ModuleType) -> None:
    config = _import("bench.config")
    cfg = config.Config(threads=2, parallel=2, max_tokens=16, rounds=1, batch_rounds=1,
                        long_prompt_tokens=0, system_prompt_tokens=0, chat_answer_tokens=0,
                        quick=True)  # fmt: skip
    info = {"n_batch": 512, "cache_type_k": "f16", "cache_type_v": "f16", "sliding_window": 512}
    cmd = cache.their_command(Path("/bin/llama-server"), Path("m.gguf"), cfg, info)
    assert "--cache-ram" not in cmd
    assert cmd[cmd.index("-np") + 1] == "2" and cmd[cmd.index("-c") + 1] == "40960"
    assert cmd[cmd.index("--kv-unified-per-slot") + 1] == "20480"
    assert cmd[cmd.index("--port") + 1] == "{port}"
    assert cmd[-3:] == ["--no-jinja", "--chat-template", "gemma"]
    ours = cache.our_command(2, ["--prompt-cache-ram", "512"])
    assert ours[-2:] == ["--prompt-cache-ram", "512"]
    assert ours[ours.index("--kv-pool-tokens") + 1] == "40960"
