"""POST /v1/chat/completions: OpenAI's chat over the serving core.

The conversation is rendered by the model's chat template, with the offered tools; the
request's fields become SamplingParams (OpenAI's defaults), a grammar (``response_format``,
a forced tool call), logprobs and ``n`` copies. The answer is split into reasoning,
content and tool calls by :mod:`.choice`, streamed or whole alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api.openai.choice import ChoiceState, whole_choice
from locallab_cpp.api.openai.common import (
    choices_of,
    engine_for,
    max_tokens_of,
    new_id,
    now,
    sampling_from,
    usage_per_prompt,
)
from locallab_cpp.api.openai.protocol import ChatCompletionRequest, ResponseFormat
from locallab_cpp.api.openai.responses import (
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
)
from locallab_cpp.api.openai.streaming import chat_stream
from locallab_cpp.api.openai.tooling import ToolPlan, messages_for, plan_tools
from locallab_cpp.engine.schema import (
    JSON_OBJECT_SCHEMA,
    checked_grammar,
    grammar_for_json_schema,
)
from locallab_cpp.engine.types import GenerationInput
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import generation as serving
from locallab_cpp.serving.tools import ToolCallFormat, tool_format_for

_DOC = (
    "OpenAI's chat completions. Any `model` name means the loaded model unless it is a "
    "model id of GET /v1/models, which is then loaded. With `stream: true` the reply is "
    "text/event-stream: `data: {chat.completion.chunk}` events, then `data: [DONE]`."
)


def response_grammar(response_format: ResponseFormat | None) -> str | None:
    """The grammar that makes the output JSON (any object, or valid under a schema)."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return grammar_for_json_schema(JSON_OBJECT_SCHEMA)
    spec = response_format.json_schema
    if spec is None or spec.schema is None:
        raise InvalidRequest(
            "Invalid request: 'response_format': type json_schema needs "
            '"json_schema": {"name": ..., "schema": {...}}.'
        )
    return grammar_for_json_schema(spec.schema)


def request_grammar(
    plan: ToolPlan, fmt: ToolCallFormat | None, response_format: ResponseFormat | None
) -> str | None:
    """The request's grammar, accepted by llama.cpp's parser: a forced call is the whole
    answer, so its grammar wins over ``response_format``. Blocking (a large schema takes
    a while to convert and parse): call it in a worker thread."""
    grammar = (plan.grammar(fmt) if fmt is not None else None) or response_grammar(response_format)
    return checked_grammar(grammar) if grammar is not None else None


class ChatController(Controller):
    """POST /v1/chat/completions."""

    tags = ["OpenAI"]

    @post(
        "/chat/completions",
        status_code=200,
        summary="Chat completion (OpenAI)",
        description=_DOC,
    )
    async def chat_completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatCompletionRequest],
        models: NamedDependency[ModelManager],
    ) -> ChatCompletion | EventStream:
        """Answer ``messages`` as the assistant, calling ``tools`` where it chooses to."""
        n = choices_of(data, models)
        plan = plan_tools(data)
        engine = await engine_for(models, data.model)
        chat = await serving.chat_tokens(engine, messages_for(data.messages), tools=plan.tools)
        fmt = tool_format_for(chat.tool_format) if plan.active else None
        grammar = await asyncio.to_thread(request_grammar, plan, fmt, data.response_format)
        logprobs = bool(data.logprobs)
        inp = GenerationInput(
            prompt_tokens=chat.tokens,
            sampling=sampling_from(data),
            max_tokens=max_tokens_of(engine, data.max_completion_tokens, data.max_tokens),
            stop=data.stop_strings() + chat.stop,
            logprobs=(data.top_logprobs or 0) if logprobs else None,
            grammar=grammar,
            n=n,
            keep_special=fmt.markers if fmt is not None else (),
        )
        handles = serving.submit(engine, [inp])
        response_id, created, model = new_id("chatcmpl"), now(), engine.info.model_id
        if data.stream:

            def make(choices: list[ChatChunkChoice]) -> ChatCompletionChunk:
                return ChatCompletionChunk(
                    id=response_id,
                    object="chat.completion.chunk",
                    created=created,
                    model=model,
                    choices=choices,
                )

            states = [ChoiceState(i, plan, fmt, chat.opens_reasoning) for i in range(n)]
            return chat_stream(
                handles, make, states, logprobs=logprobs, include_usage=data.include_usage
            )
        done = await unless_disconnected(request, serving.collect(handles))
        return ChatCompletion(
            id=response_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[
                whole_choice(i, c, plan, fmt, logprobs=logprobs, thinking=chat.opens_reasoning)
                for i, c in enumerate(done)
            ],
            usage=usage_per_prompt(done, n),
        )
