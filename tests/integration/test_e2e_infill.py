"""POST /infill, /v1/completions ``suffix`` and /api/generate ``suffix`` on the real server,
all through serving/fim.py, on the FIM copy of the embedded model (fim_model.py: FIM tokens
declared on unused tokens, so the text it writes is no good code; these tests check the
protocol and the plumbing, not the completion). The embedded model itself has no FIM
tokens: its /infill is a 400."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fim_model import FIM_MODEL_ID, fim_model
from it_support import ServerProcess, start_server

PLAIN_MODEL = "gemma-3-270m"
TIMINGS = {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"}
REQUEST = {
    "model": FIM_MODEL_ID,
    "input_prefix": "def add(a, b):\n",
    "input_suffix": "\n\nprint(add(1, 2))\n",
    "prompt": "    return ",
    "n_predict": 6,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overlay = fim_model(tmp_path_factory.mktemp("fim"))
    server = start_server("--models-file", str(overlay))
    yield server
    server.assert_clean_shutdown()


@pytest.fixture(scope="module")
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=120) as client:
        yield client


def test_a_model_without_fim_tokens_is_a_400(http: httpx.Client) -> None:
    r = http.post("/infill", json={**REQUEST, "model": PLAIN_MODEL})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    assert "fill-in-the-middle" in error["message"] and "Qwen2.5-Coder" in error["message"]


def test_infill_whole_then_again_from_the_cache(http: httpx.Client) -> None:
    # Long enough for a sliding-window checkpoint (windows.MIN_CHECKPOINT_TOKENS): the
    # embedded model is a Gemma 3, whose cache is reused only from one.
    lines = "".join(f"x{i} = add({i}, {i})\n" for i in range(30))
    data = {**REQUEST, "input_suffix": REQUEST["input_suffix"] + lines}
    r = http.post("/infill", json=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["content"], str) and body["stop"] is True
    assert body["stop_type"] in ("eos", "limit", "word") and body["truncated"] is False
    assert 0 < body["tokens_predicted"] <= 6 and body["tokens_evaluated"] > 100
    assert set(body["timings"]) >= TIMINGS and body["timings"]["prompt_ms"] > 0
    again = http.post("/infill", json=data).json()  # the same text: its prefix is cached
    assert again["content"] == body["content"]
    assert again["tokens_cached"] > 0 and again["timings"]["prompt_n"] < body["tokens_evaluated"]


def test_infill_streamed_with_extra_chunks_as_llama_vim_asks(http: httpx.Client) -> None:
    extra = [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n", "time": 1}]
    fields = ["content", "timings/prompt_n", "timings/predicted_n", "tokens_cached", "truncated"]
    data = {
        **REQUEST,
        "input_extra": extra,
        "stream": True,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "n_indent": 4,
        "response_fields": fields,
    }
    with http.stream("POST", "/infill", json=data) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events and all(e["stop"] is False for e in events[:-1])
    last = events[-1]
    assert set(last) == set(fields) and last["timings/predicted_n"] >= 1
    assert last["timings/prompt_n"] + last["tokens_cached"] > 20  # the chunk is in the prompt
    whole = http.post("/infill", json={**data, "stream": False}).json()
    assert set(whole) == set(fields) and isinstance(whole["content"], str)


def test_both_suffix_paths_still_fill_in_the_middle(http: httpx.Client) -> None:
    r = http.post(
        "/v1/completions",
        json={
            "model": FIM_MODEL_ID,
            "prompt": "def add(a, b):\n    return ",
            "suffix": "\n",
            "max_tokens": 4,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 5
    r = http.post(
        "/api/generate",
        json={
            "model": f"{FIM_MODEL_ID}:latest",
            "prompt": "def add(a, b):\n    return ",
            "suffix": "\n",
            "stream": False,
            "options": {"num_predict": 4, "temperature": 0},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True and r.json()["prompt_eval_count"] > 5
    r = http.post("/v1/completions", json={"model": PLAIN_MODEL, "prompt": "a", "suffix": "b"})
    assert r.status_code == 400 and "fill-in-the-middle" in r.json()["error"]["message"]


# ----- a typing user: superseded requests, the cached prefix ----------------------------

CODE = "".join(f"total_{i} = add({i}, {i * 7}) + scale(value_{i})\n" for i in range(110))
"""About 1,500 tokens of code for a prefix (a long prompt takes the server's one llama.cpp
thread seconds to compute, so a request sent right after it finds it still running)."""


def _post_timed(base_url: str, data: dict[str, object], agent: str, out: list[object]) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=300) as c:
        r = c.post("/infill", json=data, headers={"user-agent": agent})
    out.extend([r, started, time.monotonic()])


def _overlap(srv: ServerProcess, agents: tuple[str, str]) -> tuple[list[Any], list[Any]]:
    """Two /infill requests on the long prefix, the second sent 0.3 s after the first;
    each as [response, sent at, answered at]."""
    data = {**REQUEST, "input_prefix": CODE, "n_predict": 64}
    first: list[Any] = []
    second: list[Any] = []
    thread = threading.Thread(target=_post_timed, args=(srv.base_url, data, agents[0], first))
    thread.start()
    time.sleep(0.3)
    edited = {**data, "prompt": REQUEST["prompt"] + "a"}  # the user typed one more character
    _post_timed(srv.base_url, edited, agents[1], second)
    thread.join(300)
    return first, second


def _idle(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/system/info").json()["active_model"])


def test_the_same_clients_next_request_supersedes_the_running_one(
    srv: ServerProcess, http: httpx.Client
) -> None:
    http.post("/infill", json={**REQUEST, "n_predict": 1})  # the FIM model is loaded
    first, second = _overlap(srv, ("llama.vscode/1", "llama.vscode/1"))
    body = first[0].json()
    assert first[0].status_code == 200 and body["stop"] is True, body
    assert body["stop_type"] == "superseded", body
    assert isinstance(body["content"], str) and body["tokens_predicted"] < 64
    # Answered as soon as the second arrived, well before the second was done.
    assert first[2] < second[2] and first[2] - second[1] < 10.0, (first[1:], second[1:])
    later = second[0].json()
    assert second[0].status_code == 200 and later["stop_type"] in ("eos", "limit", "word")
    stats = _idle(http)
    assert stats["active_sequences"] == 0 and stats["queued_sequences"] == 0, stats


def test_requests_of_two_clients_both_complete(srv: ServerProcess, http: httpx.Client) -> None:
    first, second = _overlap(srv, ("llama.vscode/1", "llama.vim/1"))
    for response, _sent, _done in (first, second):
        assert response.status_code == 200, response.text
        assert response.json()["stop_type"] in ("eos", "limit", "word"), response.json()
    stats = _idle(http)
    assert stats["active_sequences"] == 0 and stats["queued_sequences"] == 0, stats


def test_an_edit_a_few_lines_before_the_cursor_reuses_the_cached_prefix(
    http: httpx.Client,
) -> None:
    # The embedded model is a Gemma 3: a cut back into its cache needs a window checkpoint,
    # and serving/fim.py asks for one a little before the cursor (checkpoint_at).
    lines = CODE.splitlines(keepends=True)
    suffix = "".join(f"check(total_{i})\n" for i in range(30))
    data = {**REQUEST, "input_prefix": CODE, "input_suffix": suffix, "n_predict": 4}
    before = http.post("/infill", json=data).json()
    lines[-3] = "total_107 = add(107, 0)  # edited\n"
    after = http.post("/infill", json={**data, "input_prefix": "".join(lines)}).json()
    evaluated = after["tokens_evaluated"]
    assert evaluated > 1500 and before["truncated"] is False
    assert after["tokens_cached"] > 0.6 * evaluated, after
    assert after["timings"]["prompt_n"] < 0.4 * evaluated, after["timings"]
