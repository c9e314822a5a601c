"""A conversation with tools, an assistant tool call and its result, rendered and generated
on the real embedded model, in-process: through the engine's own chat prompt (the GGUF has
no template; the registry's "gemma" format) and through Gemma 3's own Jinja template,
which knows nothing of tools and insists on alternating user and model turns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama import chat_tools
from locallab_cpp.engine.llama.chat_template import ChatTemplate
from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.types import (
    ChatMessage,
    ChatPrompt,
    Completion,
    GenerationInput,
    SamplingParams,
    ToolSpec,
)

pytestmark = pytest.mark.integration

# Gemma 3's chat template (google/gemma-3-*-it, tokenizer_config.json).
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

WEATHER: ToolSpec = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CONVERSATION: list[ChatMessage] = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C, sunny"},
]
CALL_TEXT = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = open_embedded_engine(parallel=2, n_ctx=1024)
    yield engine
    engine.close()


def _generate(engine: LlamaEngine, rendered: ChatPrompt) -> Completion:
    prompt = engine.tokenize(rendered.text, add_bos=not rendered.has_bos_text)
    greedy = SamplingParams(do_sample=False)
    inp = GenerationInput(tuple(prompt), greedy, 24, stop=rendered.stop)

    async def run() -> Completion:
        [handle] = engine.submit([inp])
        return await handle.result()

    return asyncio.run(run())


def _assert_in_order(text: str, parts: list[str]) -> None:
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, f"{part!r} missing (after offset {at}) in:\n{text}"
        at = found + len(part)


def test_engine_chat_prompt_with_a_tool_call_renders_and_generates(engine: LlamaEngine) -> None:
    rendered = engine.chat_prompt(CONVERSATION, tools=[WEATHER])
    _assert_in_order(
        rendered.text,
        [
            "<start_of_turn>user\nYou answer in one sentence.",
            "<tools>",
            '"get_weather"',
            "</tools>",
            "What is the weather in Paris?<end_of_turn>",
            f"<start_of_turn>model\n{chat_tools.TOOL_CALL_OPEN}\n{CALL_TEXT}",
            "<start_of_turn>user\n<tool_response>\n18C, sunny\n</tool_response><end_of_turn>",
        ],
    )
    assert rendered.text.endswith("<start_of_turn>model\n")
    done = _generate(engine, rendered)
    print("\nanswer after the tool result:", repr(done.text))
    assert done.completion_tokens > 0


def test_gemma3_own_template_with_a_tool_call_renders_and_generates(
    engine: LlamaEngine,
) -> None:
    template = ChatTemplate(
        gguf_template=GEMMA3_TEMPLATE, chat_format=None, bos_text="<bos>", eos_text="<eos>"
    )
    assert template.caps == chat_tools.PLAIN  # it shows none of it: all goes into text turns
    rendered = template.render(CONVERSATION, [WEATHER])
    assert rendered.has_bos_text
    _assert_in_order(
        rendered.text,
        [
            "<bos><start_of_turn>user\nYou answer in one sentence.\n\n# Tools",
            "What is the weather in Paris?<end_of_turn>",
            f"<start_of_turn>model\n{chat_tools.TOOL_CALL_OPEN}\n{CALL_TEXT}",
            "<start_of_turn>user\n<tool_response>\n18C, sunny\n</tool_response><end_of_turn>",
            "<start_of_turn>model\n",
        ],
    )
    done = _generate(engine, rendered)
    print("\nanswer after the tool result:", repr(done.text))
    assert done.completion_tokens > 0
