"""The agent workload of scripts/bench.py --agent-cache: the requests it builds and the plot
it draws (the servers themselves are measured by running it, not here)."""

from __future__ import annotations

import importlib
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str) -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def workload() -> ModuleType:
    return _load("benchkit.agent_workload")


def words(text: str) -> int:
    return len(text.split())


def test_prompt_reaches_the_target_with_tools(workload: ModuleType) -> None:
    prompt = workload.agent_prompt(9000, words)
    assert prompt.tokens >= 9000 - 64
    assert words(prompt.system) + sum(words(json.dumps(t)) for t in prompt.tools) >= 8900
    assert {t["function"]["name"] for t in prompt.tools} >= {"Read"}
    assert all(t["type"] == "function" for t in prompt.tools)


def test_small_target_keeps_only_the_tools_that_fit(workload: ModuleType) -> None:
    small = workload.agent_prompt(1500, words)
    big = workload.agent_prompt(9000, words)
    assert len(small.tools) < len(big.tools)
    assert small.tokens <= 1500 + 64


def test_sessions_interleave_turn_by_turn(workload: ModuleType) -> None:
    assert workload.schedule(("A", "B"), 3) == [
        ("A", 1), ("B", 1), ("A", 2), ("B", 2), ("A", 3), ("B", 3)
    ]  # fmt: skip


def test_next_turn_appends_answer_call_result_and_user_line(workload: ModuleType) -> None:
    prompt = workload.AgentPrompt("system text", [], 2)
    first = workload.first_messages(prompt, "A")
    second = workload.next_messages(first, "A", 2, "I will look.")
    assert second[: len(first)] == first
    assistant, tool, user = second[len(first) :]
    assert assistant["content"] == "I will look."
    call = assistant["tool_calls"][0]
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": tool["content"]}
    assert json.loads(call["function"]["arguments"])["file_path"].endswith(".py")
    assert 150 < words(tool["content"]) < 600
    assert user["role"] == "user"
    # Every session and turn reads a different file: nothing is cached by accident.
    assert workload.tool_result("A", 2) != workload.tool_result("B", 2)
    assert workload.tool_result("A", 2) == workload.tool_result("A", 2)
    body = workload.request_body(prompt, second)
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0


def test_plot_is_svg_with_a_line_and_legend_per_server() -> None:
    plot = _load("benchkit.svgplot")
    svg = plot.line_chart(
        "TTFT",
        ["A1", "B1", "A2", "B2"],
        [
            plot.Series("ours", [9000, 500, 120, 90]),
            plot.Series("theirs", [8000, math.nan, 300, 250]),
        ],
        "TTFT (log scale)",
        marks=[(1.5, "restart")],
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2
    assert len(lines[0].get("points", "").split()) == 4
    assert len(lines[1].get("points", "").split()) == 3  # the NaN has no point
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert {"ours", "theirs", "restart", "A1", "B2"} <= set(texts)
    assert "10 s" in texts and "100 ms" in texts  # decade ticks of the log axis
    ys = [float(p.split(",")[1]) for p in lines[0].get("points", "").split()]
    assert ys == sorted(ys)  # falling TTFTs draw lower and lower (SVG's y grows down)
