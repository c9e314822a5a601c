"""The metrics registry and its text exposition (serving/metrics.py), read back with
prometheus_client's own parser; and GET /metrics over the fake engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_error, make_client
from prometheus_client.parser import text_string_to_metric_families

from locallab_cpp.engine.types import Finished, GenerationInput, SamplingParams
from locallab_cpp.http.families import ApiFamilies
from locallab_cpp.serving import telemetry
from locallab_cpp.serving.metrics import CONTENT_TYPE, ReadFamily, Registry, format_value


def families(text: str) -> dict[str, Any]:
    """Parsed families by name (a counter's without its ``_total``, as the parser does)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values of sample ``name`` by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.fixture(autouse=True)
def _fresh_metrics() -> Iterator[None]:
    telemetry.REGISTRY.reset()
    yield
    telemetry.REGISTRY.reset()


# ----- the registry --------------------------------------------------------------------


def test_counter_names_types_and_labels() -> None:
    registry = Registry()
    requests = registry.counter("x_requests_total", "Requests.", ("api", "status"))
    requests.inc(api="openai", status="200")
    requests.inc(2, api="openai", status="200")
    requests.inc(api="ollama", status="404")
    parsed = families(registry.render())
    assert parsed["x_requests"].type == "counter"
    assert parsed["x_requests"].documentation == "Requests."
    values = samples(registry.render(), "x_requests_total")
    assert values == {
        (("api", "openai"), ("status", "200")): 3.0,
        (("api", "ollama"), ("status", "404")): 1.0,
    }


def test_counter_refuses_wrong_labels_and_going_down() -> None:
    counter = Registry().counter("x_total", "X.", ("model",))
    with pytest.raises(ValueError):
        counter.inc(api="openai")
    with pytest.raises(ValueError):
        counter.inc(-1, model="a")
    with pytest.raises(ValueError):
        Registry().counter("x", "A counter's name ends in _total.")


def test_histogram_buckets_are_cumulative_and_monotonic() -> None:
    registry = Registry()
    ttft = registry.histogram("x_seconds", "Seconds.", (0.1, 1.0, 10.0), ("model",))
    for value in (0.05, 0.1, 0.5, 2.0, 50.0):
        ttft.observe(value, model="m")
    ttft.observe(0.5, count=3, model="m")  # a mean standing for three intervals
    text = registry.render()
    family = families(text)["x_seconds"]
    assert family.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name == "x_seconds_bucket"]
    assert [le for le, _ in buckets] == ["0.1", "1", "10", "+Inf"]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts == [2, 6, 7, 8]  # 0.1 is inside le="0.1": the bound is inclusive
    assert samples(text, "x_seconds_count") == {(("model", "m"),): 8}
    assert samples(text, "x_seconds_sum")[(("model", "m"),)] == pytest.approx(54.15)
    assert ttft.count(model="m") == 8


def test_histogram_needs_increasing_buckets() -> None:
    with pytest.raises(ValueError):
        Registry().histogram("x_seconds", "X.", (1.0, 0.5))
    with pytest.raises(ValueError):
        Registry().histogram("y_seconds", "Y.", ())


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    counter = registry.counter("x_total", 'Help with a \\ and a\nnewline and "quotes".', ("m",))
    tricky = 'a "quoted" back\\slash and a\nnewline'
    counter.inc(m=tricky)
    text = registry.render()
    assert '\\"quoted\\"' in text and "back\\\\slash" in text and "a\\nnewline" in text
    [family] = text_string_to_metric_families(text)
    assert family.documentation == 'Help with a \\ and a\nnewline and "quotes".'
    assert family.samples[0].labels == {"m": tricky}


def test_read_families_are_rendered_after_the_stored_ones() -> None:
    registry = Registry()
    registry.counter("x_total", "X.").inc()
    read = [
        ReadFamily("x_depth", "Depth.", ("model",), ((("a",), 2.0), (("b",), 0.0))),
        ReadFamily("x_hits_total", "Hits.", ("model",), ((("a",), 5.0),), kind="counter"),
        ReadFamily("x_resident", "Resident.", (), (((), 2.0),)),
    ]
    text = registry.render(read)
    parsed = families(text)
    assert [name for name in parsed] == ["x", "x_depth", "x_hits", "x_resident"]
    assert parsed["x_depth"].type == "gauge" and parsed["x_hits"].type == "counter"
    assert samples(text, "x_depth") == {(("model", "a"),): 2.0, (("model", "b"),): 0.0}
    assert samples(text, "x_resident") == {(): 2.0}
    assert text.endswith("\n")


def test_values_are_formatted_as_the_format_wants() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"


def test_updates_from_many_threads_are_all_counted() -> None:
    registry = Registry()
    counter = registry.counter("x_total", "X.")
    histogram = registry.histogram("x_seconds", "X.", (1.0,))

    def work() -> None:
        for _ in range(2000):
            counter.inc()
            histogram.observe(0.5)
            registry.render()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value() == 8000 and histogram.count() == 8000


# ----- what serving counts ---------------------------------------------------------------


def test_observer_counts_a_prompt_once_for_its_copies() -> None:
    inp = GenerationInput((1, 2, 3), SamplingParams(), 8, n=2)

    class Handle:
        on_finished: Any = None

    handles = [Handle(), Handle()]
    telemetry.watch("m", [inp], handles)  # type: ignore[arg-type]
    for handle in handles:
        handle.on_finished(
            Finished(
                "stop",
                prompt_tokens=3,
                completion_tokens=5,
                cached_tokens=0,
                prompt_seconds=0.2,
                generation_seconds=0.4,
                queued_seconds=0.1,
            )
        )
    assert telemetry.PROMPT_TOKENS.value(model="m") == 3
    assert telemetry.GENERATED_TOKENS.value(model="m") == 10
    assert telemetry.TTFT.count(model="m") == 2
    assert telemetry.ITL.count(model="m") == 8  # four intervals in each copy
    text = telemetry.REGISTRY.render()
    assert samples(text, "locallab_time_to_first_token_seconds_sum") == {
        (("model", "m"),): pytest.approx(0.6)
    }
    assert samples(text, "locallab_inter_token_latency_seconds_sum") == {
        (("model", "m"),): pytest.approx(0.8)
    }


def test_api_families_by_prefix() -> None:
    named = [
        ("locallab", "/"),
        ("openai", "/v1"),
        ("anthropic", "/v1/messages"),
        ("ollama", "/api"),
    ]
    routes = ["/health", "/models/load", "/v1/chat/completions", "/api/chat", "/schema"]
    fam = ApiFamilies.build(named, routes, exact=[("/", "web")])
    assert fam.of("/v1/chat/completions") == "openai"
    assert fam.of("/v1/messages") == "anthropic"
    assert fam.of("/v1/messages/count_tokens") == "anthropic"
    assert fam.of("/v1/messagesx") == "openai"
    assert fam.of("/v1/embeddings") == "embeddings"
    assert fam.of("/api/tags") == "ollama"
    assert fam.of("/models/current") == "locallab"
    assert fam.of("/") == "web"
    assert fam.of("/wp-login.php") == "other"
    assert fam.of("/schema") == "locallab"  # the API's documentation


# ----- GET /metrics over the fake engine -------------------------------------------------


def test_metrics_are_off_by_default(models_file: Path) -> None:
    with make_client(models_file) as client:
        assert_error(client.get("/metrics"), 404, "--metrics")


def test_metrics_count_requests_and_tokens(models_file: Path) -> None:
    with make_client(models_file, metrics=True) as client:
        body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
        usage = client.post("/v1/chat/completions", json=body).json()["usage"]
        assert client.post("/v1/chat/completions", json={"messages": "no"}).status_code == 400
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE
        text = response.text
    requests = samples(text, "locallab_requests_total")
    assert requests[(("api", "openai"), ("status", "200"))] == 1
    assert requests[(("api", "openai"), ("status", "400"))] == 1
    model = (("model", "alpha"),)
    assert samples(text, "locallab_prompt_tokens_total") == {model: usage["prompt_tokens"]}
    assert samples(text, "locallab_generated_tokens_total") == {model: usage["completion_tokens"]}
    assert samples(text, "locallab_time_to_first_token_seconds_count") == {model: 1}
    assert samples(text, "locallab_model_loads_total") == {
        (("model", "alpha"), ("result", "ok")): 1
    }
    assert samples(text, "locallab_slots_idle") == {model: 4}
    assert samples(text, "locallab_slots_busy") == {model: 0}
    assert samples(text, "locallab_models_resident") == {(): 1}


def test_metrics_ask_for_the_api_key(models_file: Path) -> None:
    with make_client(models_file, metrics=True, api_keys=("sesame",)) as client:
        assert_error(client.get("/metrics"), 401)
        ok = client.get("/metrics", headers={"Authorization": "Bearer sesame"})
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200
