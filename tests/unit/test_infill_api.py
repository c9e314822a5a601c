"""POST /infill over the fake engine: llama-server's answer whole and streamed, the prompt it
builds (serving/fim.py), the limits, ``response_fields``, the refusals and their body, and
``t_max_predict_ms`` on a handle fed by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fakes import FakeFactory
from helpers import make_client
from litestar.testing import TestClient

from locallab_cpp.api.infill import run as infill
from locallab_cpp.api.infill.protocol import InfillRequest
from locallab_cpp.engine.types import Finished, GenerationHandle, TextChunk

TIMINGS = {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"}


@contextmanager
def client(models_file: Path, **engine: Any) -> Iterator[tuple[TestClient[Any], FakeFactory]]:
    factory = FakeFactory(**engine)
    with make_client(models_file, factory) as http:
        yield http, factory


def prompt_of(factory: FakeFactory) -> str:
    return factory.last.detokenize(factory.last.seen[-1].prompt_tokens)


def llama_error(response: Any, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["type"] and error["message"]
    for needle in needles:
        assert needle in error["message"], (needle, error)
    return error


def test_whole_answer_has_llama_servers_fields(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        r = http.post(
            "/infill",
            json={"input_prefix": "def f", "input_suffix": "return x", "prompt": "y ="},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert prompt_of(factory) == "<pre> def f y = <suf> return x <mid>"
    assert body["content"] == "Echo: def f y = return x\nline two end"
    assert body["stop"] is True and body["stop_type"] == "eos"
    assert body["tokens_predicted"] == 4 and body["tokens_evaluated"] == 10  # BOS too
    assert body["tokens_cached"] == 0 and body["truncated"] is False
    assert set(body["timings"]) >= TIMINGS and body["timings"]["predicted_n"] == 4


def test_input_extra_goes_before_the_prefix_with_the_file_tokens(models_file: Path) -> None:
    extra = [{"filename": "util.py", "text": "def g", "time": 12}]
    with client(models_file, fim_repo=True) as (http, factory):
        r = http.post("/infill", json={"input_prefix": "a", "input_extra": extra})
        assert r.status_code == 200, r.text
        assert prompt_of(factory) == (
            "<rep> myproject <sep> util.py def g <sep> filename <pre> a <suf> <mid>"
        )
    with client(models_file) as (http, factory):
        http.post("/infill", json={"input_prefix": "a", "input_extra": extra})
        assert prompt_of(factory) == "--- util.py --- def g <pre> a <suf> <mid>"


def test_stream_sends_content_chunks_then_the_figures(models_file: Path) -> None:
    with client(models_file) as (http, _):
        r = http.post("/infill", json={"input_prefix": "a", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert all(e["stop"] is False for e in events[:-1])
    assert "".join(e["content"] for e in events) == "Echo: a\nline two end"
    last = events[-1]
    assert (
        last["stop"] is True and last["tokens_predicted"] == 4 and set(last["timings"]) >= TIMINGS
    )


def test_response_fields_pick_paths_as_llama_vim_asks(models_file: Path) -> None:
    fields = ["content", "timings/prompt_n", "timings/predicted_ms", "tokens_cached", "nope/x"]
    with client(models_file) as (http, _):
        body = http.post("/infill", json={"input_prefix": "a", "response_fields": fields}).json()
    assert set(body) == {"content", "timings/prompt_n", "timings/predicted_ms", "tokens_cached"}


def test_n_predict_limits_and_zero_only_warms_the_cache(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        body = http.post("/infill", json={"input_prefix": "a", "n_predict": 2}).json()
        assert body["stop_type"] == "limit" and body["tokens_predicted"] == 2
        warm = {"input_extra": [{"filename": "f", "text": "x"}], "n_predict": 0}
        body = http.post("/infill", json={**warm, "samplers": [], "cache_prompt": True}).json()
        assert body["content"] == "" and body["tokens_predicted"] == 0
        assert factory.last.seen[-1].max_tokens == 1


def test_stop_strings_and_sampling_fields(models_file: Path) -> None:
    data = {"input_prefix": "a", "stop": ["line"], "temperature": 0, "top_k": 5, "seed": -1}
    with client(models_file) as (http, factory):
        body = http.post("/infill", json={**data, "n_indent": 4, "t_max_prompt_ms": 500}).json()
        sampling = factory.last.seen[-1].sampling
    assert body["stop_type"] == "word" and body["stopping_word"] == "line"
    assert sampling.temperature == 0 and sampling.top_k == 5 and sampling.seed is None


def test_a_prompt_longer_than_the_context_is_trimmed_not_refused(models_file: Path) -> None:
    prefix = " ".join(f"p{i}" for i in range(500))
    extra = [{"filename": "f", "text": " ".join(f"e{i}" for i in range(100))}]
    with client(models_file) as (http, factory):
        r = http.post("/infill", json={"input_prefix": prefix, "input_extra": extra})
        assert r.status_code == 200, r.text
        assert len(factory.last.seen[-1].prompt_tokens) <= factory.last.n_ctx
        assert "p499 <suf>" in prompt_of(factory) and "e0" not in prompt_of(factory)
    assert r.json()["truncated"] is True


def test_a_model_without_fim_tokens_is_a_400_that_names_one(models_file: Path) -> None:
    with client(models_file, fim=False) as (http, _):
        r = http.post("/infill", json={"input_prefix": "a"})
    error = llama_error(r, 400, "fill-in-the-middle", "Qwen2.5-Coder")
    assert error["type"] == "invalid_request_error"


def test_bad_fields_are_400_in_llama_servers_body(models_file: Path) -> None:
    with client(models_file) as (http, _):
        llama_error(http.post("/infill", json={"n_predict": -5}), 400, "n_predict")
        llama_error(http.post("/infill", json={"input_extra": "x"}), 400, "input_extra")
        llama_error(http.get("/infill"), 405)


def test_t_max_predict_ms_stops_after_a_newline_once_the_time_is_up() -> None:
    class Engine:
        class info:
            model_id = "m"

        def tokenize(self, text: str, **_: Any) -> list[int]:
            return [0] * len(text.split())

    async def main() -> list[Any]:
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        prepared = infill.Prepared(handle, prompt_tokens=5, truncated=False, warm_only=False)
        out: list[Any] = []

        async def feed() -> None:
            for text in ["a", " b\n", " c", " d", " e"]:
                handle.push(TextChunk(text))
                await asyncio.sleep(0.03)
            handle.push(Finished("stop", 5, 5, 0))

        feeder = asyncio.create_task(feed())
        async for item in infill.run(Engine(), prepared, 50):  # type: ignore[arg-type]
            out.append(item)
        await feeder
        assert handle.cancelled.is_set()
        return out

    out = asyncio.run(main())
    final = out[-1]
    assert "".join(x for x in out if isinstance(x, str)).startswith("a b\n")
    assert len(out) < 6 and final["stop_type"] == "limit"
    assert final["tokens_predicted"] == len("".join(out[:-1]).split())


def test_sampling_defaults_are_llama_servers() -> None:
    sampling = infill.sampling_of(InfillRequest())
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p) == (
        0.8,
        40,
        0.95,
        0.05,
    )
