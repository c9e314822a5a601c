"""Tool-call grammars drive the real embedded model (Gemma 3 270M, a base model that knows
no tool format) to calls that each family's parser reads, with valid arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams, ToolSpec
from locallab_cpp.serving.tools import tool_format_for, validate_arguments

pytestmark = pytest.mark.integration

# Bounded schemas, so every call the grammar allows fits in the token budget.
TOOLS: list[ToolSpec] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"enum": ["UTC", "CET"]}},
                "required": ["zone"],
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters") for t in TOOLS}
PROMPT = "User: What is the weather in Paris?\nAssistant:"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = open_embedded_engine(parallel=2, n_ctx=512)
    yield engine
    engine.close()


def _complete(engine: LlamaEngine, grammar: str, sampling: SamplingParams) -> Completion:
    inp = GenerationInput(tuple(engine.tokenize(PROMPT)), sampling, 160, grammar=grammar)

    async def run() -> Completion:
        [handle] = engine.submit([inp])
        return await handle.result()

    return asyncio.run(run())


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral"])
@pytest.mark.parametrize(
    ("name", "parallel", "sampling"),
    [
        ("get_weather", False, SamplingParams(do_sample=False)),
        (None, True, SamplingParams(temperature=1.0, seed=7)),
    ],
)
def test_grammar_output_parses_to_valid_calls(
    engine: LlamaEngine, family: str, name: str | None, parallel: bool, sampling: SamplingParams
) -> None:
    fmt = tool_format_for(family)
    done = _complete(engine, fmt.grammar(TOOLS, name, parallel), sampling)
    content, calls = fmt.parse(done.text)
    assert calls, done.text
    if parallel:
        # "(call)*" lets a base model repeat calls until the token limit; the call that
        # limit cuts is content, every finished one is read.
        assert done.finish_reason == "stop" or content, done.text
    else:
        assert done.finish_reason == "stop", done.text
        assert content == "", done.text
        assert len(calls) == 1
    for call in calls:
        assert call.name == (name or call.name) and call.name in SCHEMAS
        assert validate_arguments(call.arguments, SCHEMAS[call.name]) is None, done.text
