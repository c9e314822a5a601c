"""serving's neutral answer stream (serving/answer.py, events.py, chat.py): reasoning, text
and tool calls as events, the whole answer as their fold, the stop string carried."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fakes import FakeEngine
from helpers import make_settings, write_registry

from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import Completion, SamplingParams, TokenLogprob
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.registry import Registry
from locallab_cpp.serving.answer import AnswerStream, whole_answer
from locallab_cpp.serving.chat import ChatRequest, start_chat
from locallab_cpp.serving.events import (
    AnswerEvent,
    ChoiceFinished,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    fold,
)
from locallab_cpp.serving.tools import NamedTool, ToolDef, plan_tools, tool_format_for
from locallab_cpp.serving.turns import CallMade, Turn, messages_of

WEATHER = ToolDef(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
CHUNKS = ["<think>Cold", " there?</think>", "Let me look.", CALL[:20], CALL[20:]]


def _done(text: str, reason: str = "stop", stop: str | None = None) -> Completion:
    return Completion(text, reason, 5, 3, 1, stop_sequence=stop)  # type: ignore[arg-type]


def _streamed(stream: AnswerStream, chunks: list[str], done: Completion) -> list[AnswerEvent]:
    events: list[AnswerEvent] = []
    for chunk in chunks:
        events += stream.feed(chunk)
    return events + stream.finish(done)


def _stream(**kw: object) -> AnswerStream:
    return AnswerStream(plan_tools([WEATHER]), tool_format_for("hermes"), **kw)  # type: ignore[arg-type]


def test_reasoning_text_and_a_tool_call_as_events() -> None:
    done = _done("".join(CHUNKS))
    events = _streamed(_stream(), CHUNKS, done)
    arguments = events[4].fragment  # type: ignore[union-attr]
    assert json.loads(arguments) == {"city": "Oslo"}
    assert [e for e in events if not isinstance(e, ChoiceFinished)] == [
        ReasoningDelta("Cold"),
        ReasoningDelta(" there?"),
        TextDelta("Let me look."),
        ToolCallStart(0, events[3].id, "get_weather"),  # type: ignore[union-attr]
        ToolCallArgs(0, arguments),
        ToolCallEnd(0),
    ]
    assert events[-1] == ChoiceFinished("tool_calls", None, 5, 3, 1)


def test_the_fold_of_the_stream_is_the_whole_answer() -> None:
    done = _done("".join(CHUNKS))
    streamed = fold(_streamed(_stream(), CHUNKS, done))
    whole = whole_answer(_stream(), done)
    # Call ids are made per read; everything else agrees.
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    assert (streamed.reasoning, streamed.text, streamed.finished) == (
        whole.reasoning,
        whole.text,
        whole.finished,
    )
    assert whole.reasoning == "Cold there?" and whole.text == "Let me look."
    assert json.loads(whole.tool_calls[0].arguments) == {"city": "Oslo"}


def test_an_invalid_auto_call_is_text_and_the_engines_reason() -> None:
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"town": 1}}\n</tool_call>'
    answer = whole_answer(_stream(split_reasoning=False), _done("Hm. " + bad))
    assert answer.text == "Hm. " + bad and answer.tool_calls == ()
    assert answer.finished.reason == "stop"


def test_a_forced_call_cut_by_the_limit_is_text() -> None:
    plan = plan_tools([WEATHER], NamedTool("get_weather"))
    stream = AnswerStream(plan, tool_format_for("hermes"))
    answer = whole_answer(stream, _done(CALL[:30], "length"))
    assert answer.text == CALL[:30] and answer.finished.reason == "length"


def test_the_clients_stop_string_is_carried_and_the_templates_is_not() -> None:
    stream = AnswerStream(stops=("STOP",))
    assert whole_answer(stream, _done("a", stop="STOP")).finished.stop_sequence == "STOP"
    template = AnswerStream(stops=("STOP",))
    assert whole_answer(template, _done("a", stop="<|end|>")).finished.stop_sequence is None


def test_every_tokens_logprobs_arrive_once_on_text_deltas() -> None:
    texts = ["<think>x", "</think>", "y"]
    tokens = [TokenLogprob(i, t, t.encode(), -0.1) for i, t in enumerate(texts)]
    stream = AnswerStream()
    events: list[AnswerEvent] = []
    for token in tokens:
        events += stream.feed(token.text, [token])
    events += stream.finish(_done("<think>x</think>y"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    # The reasoning's tokens ride on the first text delta.
    assert deltas == [TextDelta("y", tuple(tokens))]
    assert fold(events).logprobs == tuple(tokens)


def test_an_unknown_named_tool_and_a_bad_schema_are_400s() -> None:
    with pytest.raises(InvalidRequest, match="no function named 'nope'"):
        plan_tools([WEATHER], NamedTool("nope"))
    bad = ToolDef("f", parameters={"type": 5}, where="tools[0].input_schema")
    with pytest.raises(InvalidRequest, match=r"tools\[0\]\.input_schema"):
        plan_tools([bad])
    assert not plan_tools([WEATHER], "none").active


def test_turns_map_to_the_templates_messages() -> None:
    turns = [
        Turn("user", "hi"),
        Turn("assistant", None, (CallMade("c1", "get_weather", '{"city": "Oslo"}'),), "think"),
        Turn("tool", "cold", tool_call_id="c1", name="get_weather"),
    ]
    assert messages_of(turns) == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
            "reasoning_content": "think",
        },
        {"role": "tool", "content": "cold", "tool_call_id": "c1", "name": "get_weather"},
    ]


class _Source:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    async def engine_for(self, model_id: str | None) -> Engine:
        return self.engine


def _engine(tmp_path: Path, output: list[str]) -> FakeEngine:
    models_file = write_registry(tmp_path)
    spec = Registry.from_file(models_file).get("alpha")
    return FakeEngine(spec, tmp_path / "alpha.gguf", make_settings(models_file), output=output)


def test_a_run_streams_and_collects_the_same_answers(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["<think>hm</think>", "It is ", "cold. STOP and more"])
    request = ChatRequest(
        turns=[Turn("user", "weather?")], sampling=SamplingParams(), stop=("STOP",), n=2
    )

    async def main() -> tuple[list[list[AnswerEvent]], list[object], object, object]:
        run = await start_chat(_Source(engine), request)
        per_choice: list[list[AnswerEvent]] = [[], []]
        async for index, event in run.events():
            per_choice[index].append(event)
        streamed_usage = run.usage()
        again = await start_chat(_Source(engine), request)
        answers = await again.collect()
        return per_choice, list(answers), streamed_usage, again.usage()

    per_choice, answers, streamed_usage, whole_usage = asyncio.run(main())
    assert [fold(events) for events in per_choice] == answers
    first = fold(per_choice[0])
    assert (first.reasoning, first.text) == ("hm", "It is cold. ")
    assert first.finished.reason == "stop" and first.finished.stop_sequence == "STOP"
    assert streamed_usage == whole_usage
    assert engine.seen[0].stop[0] == "STOP"  # the client's first, then the template's
