"""Tool-call formats: each family's real output read whole and streamed, grammars that
llama.cpp accepts, argument validation, and the family a chat template implies."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from locallab_cpp.engine.llama import chat_tools
from locallab_cpp.engine.types import ToolSpec
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving.tools import (
    ParsedToolCall,
    ToolCallDelta,
    ToolCallFormat,
    tool_format_for,
    validate_arguments,
)

WEATHER_ARGS = '{"city":"Paris"}'

# (format, generated text, content, [(name, arguments)]): the exact text these models
# write, as in llama.cpp's tests/test-chat.cpp and the models' chat templates.
CASES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    # Qwen 2.5 / Hermes 3 / Qwen 3
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "hermes",
        "Let me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris", "fmt": '
        '"\\"24h\\" {x}"}}\n</tool_call>',
        "Let me check.",
        [
            ("get_weather", WEATHER_ARGS),
            ("get_time", '{"tz":"Europe/Paris","fmt":"\\"24h\\" {x}"}'),
        ],
    ),
    # keys in the other order, and arguments as a JSON string: read whole
    (
        "hermes",
        '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n'
        "</tool_call>",
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    # Llama 3.2: the bare object (the grammar's trailing space dropped); Llama 3.1: after
    # <|python_tag|>; several with ";"
    (
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris"}} ',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "llama3",
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {}}',
        "",
        [("get_weather", WEATHER_ARGS), ("get_time", "{}")],
    ),
    # Mistral v0.3 / Nemo
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcdefghi"}]',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {"tz": "UTC"}}]',
        "",
        [("get_weather", WEATHER_ARGS), ("get_time", '{"tz":"UTC"}')],
    ),
    # the engine's text leaves the [TOOL_CALLS] control token out
    (
        "mistral",
        '[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcdefghi"}]',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    # Mistral Small 3.2 / Devstral
    (
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        "",
        [("get_weather", WEATHER_ARGS)],
    ),
    (
        "mistral",
        '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}[TOOL_CALLS]special_function_with_opt'
        '[ARGS]{"arg1": 1, "arg2": 2}',
        "",
        [("special_function", '{"arg1":1}'), ("special_function_with_opt", '{"arg1":1,"arg2":2}')],
    ),
]

PLAIN_TEXTS = [
    "Hello, world!\nWhat's up?",
    'The answer is {"x": 1} and [1, 2].',
    "  leading and trailing spaces  \n",
    "",
    "<tool",
    "a < b and c [ d ] e { f }",
]

MALFORMED: dict[str, list[str]] = {
    "hermes": [
        "<tool_call>not json</tool_call>",
        '<tool_call>\n{"nom": "x", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": 42, "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "x", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "x", "arguments": {"a": 1',  # cut by the token limit
        '<tool_call>\n{"name": "x"',
    ],
    "llama3": [
        '{"answer": 42}',
        '<|python_tag|>python.call(code="1+1")',
        '{"name": "x", "parameters": {"a": tru}}',
    ],
    "mistral": [
        "[TOOL_CALLS]oops",
        "[1, 2, 3]",
        '[TOOL_CALLS][{"id": 5}]',
        "[TOOL_CALLS]f[ARGS]42",
    ],
}

TOOLS: list[ToolSpec] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city.",
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
    {"type": "function", "function": {"name": "get_time", "parameters": {}}},
    {
        "type": "function",
        "function": {"name": "root", "description": "A name that is a GBNF rule's."},
    },
]


def stream(fmt: ToolCallFormat, pieces: list[str]) -> tuple[str, list[ParsedToolCall]]:
    """Feed ``pieces`` to a streamer; the content and the calls its deltas add up to."""
    streamer = fmt.streamer()
    content: list[str] = []
    deltas: list[ToolCallDelta] = []
    for piece in pieces:
        text, new = streamer.feed(piece)
        content.append(text)
        deltas += new
    text, new = streamer.finish()
    content.append(text)
    deltas += new
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        if d.id is not None:
            assert d.index == len(calls) and d.name is not None and d.arguments == ""
            calls[d.index] = {"id": d.id, "name": d.name, "args": ""}
        else:
            assert d.name is None and d.arguments
            calls[d.index]["args"] += d.arguments
    parsed = [ParsedToolCall(c["id"], c["name"], c["args"]) for c in calls.values()]
    return "".join(content), parsed


def chunkings(text: str) -> Iterator[list[str]]:
    """The text whole, one character at a time, and in random chunks."""
    yield [text]
    yield list(text)
    rng = random.Random(len(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 8))))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def names_and_args(calls: list[ParsedToolCall]) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in calls]


@pytest.mark.parametrize(("family", "text", "content", "expected"), CASES)
def test_parse_real_output(family: str, text: str, content: str, expected: list[Any]) -> None:
    got_content, calls = tool_format_for(family).parse(text)
    assert got_content == content
    assert names_and_args(calls) == expected
    for call in calls:
        assert isinstance(json.loads(call.arguments), dict)
        if family == "mistral":
            assert len(call.id) == 9 and call.id.isalnum()
        else:
            assert call.id.startswith("call_")
    assert len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize(("family", "text", "content", "expected"), CASES)
def test_streaming_matches_parse(family: str, text: str, content: str, expected: list[Any]) -> None:
    fmt = tool_format_for(family)
    for pieces in chunkings(text):
        got_content, calls = stream(fmt, pieces)
        assert got_content == content, pieces
        assert names_and_args(calls) == expected, pieces


def test_arguments_stream_as_they_arrive() -> None:
    fmt = tool_format_for("hermes")
    streamer = fmt.streamer()
    _, deltas = streamer.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert [(d.index, d.name, d.arguments) for d in deltas] == [
        (0, "get_weather", ""),
        (0, None, '{"city":"Pa'),
    ]
    _, deltas = streamer.feed('ris"}}\n</tool_call>')
    assert [d.arguments for d in deltas] == ['ris"}']


def test_content_is_released_while_markers_are_held_back() -> None:
    streamer = tool_format_for("hermes").streamer()
    assert streamer.feed("Hello <tool") == ("Hello", [])
    assert streamer.feed("box> there") == (" <toolbox> there", [])
    assert streamer.finish() == ("", [])


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral"])
@pytest.mark.parametrize("text", PLAIN_TEXTS)
def test_text_without_calls_passes_through(family: str, text: str) -> None:
    fmt = tool_format_for(family)
    assert fmt.parse(text) == (text, [])
    for pieces in chunkings(text) if text else [[""]]:
        assert stream(fmt, pieces) == (text, [])


@pytest.mark.parametrize(
    ("family", "text"), [(f, t) for f, texts in MALFORMED.items() for t in texts]
)
def test_malformed_calls_stay_content(family: str, text: str) -> None:
    assert tool_format_for(family).parse(text) == (text, [])


def test_malformed_call_before_a_good_one() -> None:
    text = (
        "<tool_call>oops</tool_call> then "
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    content, calls = tool_format_for("hermes").parse(text)
    assert content == "<tool_call>oops</tool_call> then"
    assert names_and_args(calls) == [("get_time", "{}")]
    for pieces in chunkings(text):
        got, streamed = stream(tool_format_for("hermes"), pieces)
        assert (got, names_and_args(streamed)) == (content, names_and_args(calls))


def test_unknown_or_missing_format_is_hermes() -> None:
    assert tool_format_for(None).name == "hermes"
    assert tool_format_for("nonsense").name == "hermes"
    assert tool_format_for("llama3").name == "llama3"


@pytest.mark.parametrize(
    ("template", "caps", "family"),
    [
        ("{{ '<tool_call>' }}{{ tools }}", chat_tools.TemplateCaps(tools=True), "hermes"),
        (
            "[AVAILABLE_TOOLS]{{ tools }}[TOOL_CALLS]",
            chat_tools.TemplateCaps(tools=True),
            "mistral",
        ),
        ("<|python_tag|>{{ tools }}", chat_tools.TemplateCaps(tools=True), "llama3"),
        ('"parameters" ipython {{ tools }}', chat_tools.TemplateCaps(tools=True), "llama3"),
        ("[TOOL_CALLS]", chat_tools.PLAIN, "hermes"),  # tools written as Hermes text
        (None, chat_tools.PLAIN, "hermes"),
    ],
)
def test_template_tool_format(
    template: str | None, caps: chat_tools.TemplateCaps, family: str
) -> None:
    assert chat_tools.tool_format(template, caps) == family


# -- grammars ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    """The embedded model's vocabulary, loaded without weights."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from locallab_cpp.engine.llama.loading import init_backend
    from locallab_cpp.models.registry import Registry

    registry = Registry.load(None)
    spec = registry.get(registry.default_id)
    init_backend()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(registry.ensure_local(spec)).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral"])
@pytest.mark.parametrize(
    ("name", "parallel"), [(None, False), (None, True), ("get_weather", False), ("root", True)]
)
def test_grammar_is_accepted_by_llama_cpp(
    vocab: Any, family: str, name: str | None, parallel: bool
) -> None:
    from locallab_cpp.engine.llama.grammar import check_grammar

    grammar = tool_format_for(family).grammar(TOOLS, name, parallel)
    assert grammar.startswith("root ::= ")
    assert grammar.count("\nroot ::=") == 0  # the converter's root was renamed
    check_grammar(vocab, grammar)


def test_grammar_for_unknown_tool_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="nope"):
        tool_format_for("hermes").grammar(TOOLS, "nope", False)
    with pytest.raises(InvalidRequest):
        tool_format_for("hermes").grammar([], None, False)


# -- argument validation -----------------------------------------------------------------

WEATHER_SCHEMA = TOOLS[0]["function"]["parameters"]


@pytest.mark.parametrize(
    ("arguments", "schema", "ok"),
    [
        ('{"city": "Paris", "unit": "celsius"}', WEATHER_SCHEMA, True),
        ('{"city": "Paris"}', WEATHER_SCHEMA, False),
        ('{"city": "Paris", "unit": "kelvin"}', WEATHER_SCHEMA, False),
        ('{"city": 3, "unit": "celsius"}', WEATHER_SCHEMA, False),
        ('{"city": "Paris, France!", "unit": "celsius"}', WEATHER_SCHEMA, False),
        ("{}", None, True),
        ("{}", {}, True),
        ("[]", None, False),
        ("{not json", None, False),
        ('{"n": 2}', {"properties": {"n": {"type": "integer", "minimum": 3}}}, False),
        ('{"n": true}', {"properties": {"n": {"type": "number"}}}, False),
        ('{"n": 2.0}', {"properties": {"n": {"type": "integer"}}}, True),
        ('{"xs": [1, "a"]}', {"properties": {"xs": {"items": {"type": "integer"}}}}, False),
        (
            '{"xs": [1, 2]}',
            {"properties": {"xs": {"type": "array", "items": {"type": "integer"}}}},
            True,
        ),
        (
            '{"v": null}',
            {"properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            True,
        ),
        (
            '{"v": 1}',
            {"properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            False,
        ),
        ('{"k": "a"}', {"properties": {"k": {"const": "b"}}}, False),
        ('{"extra": 1}', {"properties": {}, "additionalProperties": False}, False),
    ],
)
def test_validate_arguments(arguments: str, schema: Any, ok: bool) -> None:
    reason = validate_arguments(arguments, schema)
    assert (reason is None) == ok, reason
