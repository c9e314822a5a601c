"""Chat prompts with tools, tool calls and tool results (engine/llama/chat_tools.py and
chat_template.py), rendered with real templates in llama-cpp-python's sandboxed Jinja."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_cpp import llama_chat_format

from locallab_cpp.engine.llama import chat_tools
from locallab_cpp.engine.llama.chat_template import ChatTemplate
from locallab_cpp.engine.types import ChatMessage, ToolSpec
from locallab_cpp.errors import InvalidRequest

# Qwen 2.5's chat template (Qwen/Qwen2.5-*-Instruct, tokenizer_config.json): tools listed in
# the system turn, calls as <tool_call> JSON, consecutive results in one user turn.
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501

# A template that knows nothing of tools and insists on alternating turns, like Gemma's.
STRICT_TEMPLATE = """{{ bos_token }}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}{%- continue -%}{%- endif -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == (1 if messages[0]['role'] == 'system' else 0)) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['content'] is not string -%}{{ raise_exception("Invalid content type") }}{%- endif -%}
    {{ '<turn>' + message['role'] + '\n' + message['content'] + '<end>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<turn>assistant\n' }}{%- endif -%}
"""  # noqa: E501

WEATHER: ToolSpec = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK: ToolSpec = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}

CONVERSATION: list[ChatMessage] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "14:05"},
]


def _template(text: str | None, chat_format: str | None = None) -> ChatTemplate:
    return ChatTemplate(
        gguf_template=text, chat_format=chat_format, bos_text="<bos>", eos_text="<eos>"
    )


def _in_order(text: str, parts: list[str]) -> None:
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, f"{part!r} missing (after offset {at}) in:\n{text}"
        at = found + len(part)


def test_qwen_template_shows_tools_calls_and_results_itself() -> None:
    template = _template(QWEN25_TEMPLATE)
    assert template.caps == chat_tools.TemplateCaps(
        tools=True, tool_calls=True, tool_responses=True, null_content=True
    )
    text = template.render(CONVERSATION, [WEATHER, CLOCK]).text
    _in_order(
        text,
        [
            "<|im_start|>system\nYou are terse.",
            "<tools>\n" + json.dumps(WEATHER, ensure_ascii=False),
            json.dumps(CLOCK, ensure_ascii=False) + "\n</tools>",
            "<|im_end|>\n<|im_start|>user\nWeather and time in Paris?<|im_end|>",
            # The JSON-text arguments reach the template as an object (tojson of a dict).
            '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call>',
            '{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>',
            "<|im_start|>user\n<tool_response>\n18C, sunny\n</tool_response>"
            "\n<tool_response>\n14:05\n</tool_response><|im_end|>",
        ],
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system" not in text[1:]  # the system turn is not repeated


def test_plain_messages_render_as_before() -> None:
    """LocalLab's {"role", "content"} conversations give the template's own output."""
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    direct = llama_chat_format.Jinja2ChatFormatter(
        template=QWEN25_TEMPLATE, eos_token="<eos>", bos_token="<bos>"
    )(messages=messages)  # type: ignore[arg-type]
    rendered = _template(QWEN25_TEMPLATE).render(messages)
    assert rendered.text == direct.prompt
    assert "<tools>" not in rendered.text


def test_a_template_without_tools_gets_them_written_into_text_turns() -> None:
    template = _template(STRICT_TEMPLATE)
    assert template.caps == chat_tools.PLAIN
    text = template.render(CONVERSATION, [WEATHER]).text
    _in_order(
        text,
        [
            "<bos>",
            "<turn>user\nWeather and time in Paris?<end>",
            '<turn>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
            "\n</tool_call>\n<tool_call>",
            '"get_time"',
            # Both results in one user turn, so turns still alternate.
            "<turn>user\n<tool_response>\n18C, sunny\n</tool_response>\n"
            "<tool_response>\n14:05\n</tool_response><end>",
            "<turn>assistant\n",
        ],
    )


def test_user_text_after_tool_results_joins_their_turn() -> None:
    """Anthropic's user turns hold tool results and text together; a template that
    alternates user and assistant (Gemma's) must still get one user turn."""
    conversation = [*CONVERSATION, {"role": "user", "content": "And tomorrow?"}]
    text = _template(STRICT_TEMPLATE).render(conversation, [WEATHER]).text
    assert "<tool_response>\n14:05\n</tool_response>\n\nAnd tomorrow?<end>" in text
    messages, _ = chat_tools.prepare(conversation, None, chat_tools.PLAIN)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_tools_go_into_the_system_turn_when_the_template_cannot_list_them() -> None:
    messages, tools = chat_tools.prepare(CONVERSATION[:2], [WEATHER], chat_tools.PLAIN)
    assert tools is None
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You are terse.\n\n# Tools")
    assert json.dumps(WEATHER, ensure_ascii=False) in messages[0]["content"]
    assert chat_tools.TOOL_CALL_OPEN in messages[0]["content"]
    # No system turn: one is added in front.
    messages, _ = chat_tools.prepare(CONVERSATION[1:2], [WEATHER], chat_tools.PLAIN)
    assert [m["role"] for m in messages] == ["system", "user"]


@pytest.mark.parametrize("fmt", ["gemma", "chatml"])
def test_named_formats_get_everything_as_text(fmt: str) -> None:
    text = _template(None, fmt).render(CONVERSATION, [WEATHER]).text
    _in_order(
        text,
        [
            "get_weather",  # the tool list
            "Weather and time in Paris?",
            '{"name": "get_weather", "arguments": {"city": "Paris"}}',
            "<tool_response>\n18C, sunny\n</tool_response>",
            "<tool_response>\n14:05\n</tool_response>",
        ],
    )


def test_arguments_that_are_not_a_json_object_stay_text() -> None:
    call: Any = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "oops{"}}
    messages, _ = chat_tools.prepare(
        [{"role": "assistant", "content": "", "tool_calls": [call]}],
        None,
        chat_tools.TemplateCaps(tool_calls=True),
    )
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == "oops{"
    assert call["function"]["arguments"] == "oops{"  # the caller's message is not changed


def test_none_content_becomes_empty_text_where_the_template_needs_it() -> None:
    caps = chat_tools.TemplateCaps(tools=True, tool_calls=True, tool_responses=True)
    messages, _ = chat_tools.prepare(CONVERSATION, None, caps)
    assert messages[2]["content"] == ""
    assert [c["function"]["arguments"] for c in messages[2]["tool_calls"]] == [
        {"city": "Paris"},
        {},
    ]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]


def test_a_rejected_conversation_is_an_invalid_request() -> None:
    template = _template(STRICT_TEMPLATE)
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
