"""Pure helpers of the llama.cpp engine (no model is loaded)."""

from __future__ import annotations

import pytest

from locallab_cpp.engine.llama import loading
from locallab_cpp.engine.llama.loading import (
    ALL_LAYERS,
    CPU_UBATCH,
    resolve_gpu_layers,
    ubatch_size,
)
from locallab_cpp.engine.llama.slots import common_prefix as _common_prefix
from locallab_cpp.engine.llama.text import find_stop
from locallab_cpp.engine.llama.text import stop_hold as _stop_hold


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 4], 2),
        ([1, 2], [1, 2, 3, 4], 2),
        ([1, 2, 3, 4], [1, 2], 2),
        ([5, 1, 2], [1, 1, 2], 0),
        ((7, 8), [7, 8, 9], 2),
    ],
)
def test_common_prefix(a: list[int], b: list[int], n: int) -> None:
    assert _common_prefix(a, b) == n
    assert _common_prefix(b, a) == n


@pytest.mark.parametrize(
    ("text", "stops", "hold"),
    [
        ("Hello", [], 0),
        ("Hello", ["</s>"], 0),
        ("Hello <", ["</s>"], 1),
        ("Hello </", ["</s>"], 2),
        ("Hello </s", ["</s>"], 3),
        ("Hello wor", ["world"], 3),
        ("ab", ["abc"], 2),  # the whole text may begin the stop string
        ("", ["abc"], 0),
        ("x#", ["###"], 1),
        ("x##", ["###", "#!"], 2),  # the longest possible start wins
        ("x#", ["#!", "###"], 1),
        ("abc", ["c"], 0),  # a one-character stop is matched whole, never held
        ("User", ["\nUser:"], 0),  # only a prefix of the stop counts, not a middle
        ("a\nUs", ["\nUser:"], 3),
    ],
)
def test_stop_hold(text: str, stops: list[str], hold: int) -> None:
    assert _stop_hold(text, stops) == hold
    assert 0 <= _stop_hold(text, stops) <= len(text)


def test_find_stop_says_which_stop_string_matched() -> None:
    assert find_stop("abXYcdEND", ["END", "XY"], 0) == (2, "XY")  # the earliest wins
    assert find_stop("abXYcdEND", ["END", "XY"], 3) == (6, "END")
    assert find_stop("abc", ["END"], 0) == (-1, None)


def test_stop_hold_holds_every_proper_prefix() -> None:
    for stop in ["<|im_end|>", "\n\n", "END"]:
        for cut in range(len(stop)):
            assert _stop_hold("text " + stop[:cut], [stop]) == cut
        # A complete stop string is cut by the caller before holding is asked.
        assert _stop_hold("text " + stop, [stop]) < len(stop)


def test_resolve_gpu_layers_explicit_values() -> None:
    assert resolve_gpu_layers(-1) == ALL_LAYERS
    assert resolve_gpu_layers(0) == 0
    assert resolve_gpu_layers(12) == 12
    assert resolve_gpu_layers(None) in (0, ALL_LAYERS)


def test_ubatch_is_small_on_the_cpu_and_whole_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "gpu_offload_supported", lambda: True)
    assert ubatch_size(512, 0) == CPU_UBATCH
    assert ubatch_size(64, 0) == 64
    assert ubatch_size(512, ALL_LAYERS) == 512
    monkeypatch.setattr(loading, "gpu_offload_supported", lambda: False)
    assert ubatch_size(512, ALL_LAYERS) == CPU_UBATCH  # no GPU in this build: the CPU runs it
