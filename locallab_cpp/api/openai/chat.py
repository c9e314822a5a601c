"""POST /v1/chat/completions: OpenAI's chat over the serving core.

The request is translated into serving's ChatRequest (translate.py: turns, the tool plan,
OpenAI's sampling defaults, ``response_format`` as a schema); serving/chat.py renders,
plans and submits, and reads each choice into neutral events. This module only shapes
them: chunks (streaming.py) or the whole completion, the fold of the same events.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api.openai.common import chat_logprobs, choices_of, new_id, now, openai_usage
from locallab_cpp.api.openai.protocol import ChatCompletionRequest
from locallab_cpp.api.openai.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    FunctionCallOut,
    ToolCallOut,
)
from locallab_cpp.api.openai.streaming import chat_stream
from locallab_cpp.api.openai.translate import chat_request
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import start_chat
from locallab_cpp.serving.events import Answer

_DOC = (
    "OpenAI's chat completions. Any `model` name means the loaded model unless it is a "
    "model id of GET /v1/models, which is then loaded. With `stream: true` the reply is "
    "text/event-stream: `data: {chat.completion.chunk}` events, then `data: [DONE]`."
)


def chat_choice(index: int, answer: Answer, *, logprobs: bool) -> ChatChoice:
    """A whole answer as OpenAI's choice."""
    calls = [
        ToolCallOut(
            id=call.id,
            type="function",
            function=FunctionCallOut(name=call.name, arguments=call.arguments),
        )
        for call in answer.tool_calls
    ]
    return ChatChoice(
        index=index,
        message=AssistantMessage(
            role="assistant",
            # Only calls: content is null, as OpenAI's; text beside them stays.
            content=None if calls and not answer.text.strip() else answer.text,
            reasoning_content=answer.reasoning or None,
            tool_calls=calls or None,
        ),
        logprobs=chat_logprobs(answer.logprobs) if logprobs else None,
        finish_reason=answer.finished.reason,
    )


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
        run = await start_chat(models, chat_request(data, models, choices_of(data, models)))
        response_id, created, logprobs = new_id("chatcmpl"), now(), bool(data.logprobs)
        if data.stream:

            def make(choices: list[ChatChunkChoice]) -> ChatCompletionChunk:
                return ChatCompletionChunk(
                    id=response_id,
                    object="chat.completion.chunk",
                    created=created,
                    model=run.model,
                    choices=choices,
                )

            return chat_stream(run, make, logprobs=logprobs, include_usage=data.include_usage)
        answers = await unless_disconnected(request, run.collect())
        return ChatCompletion(
            id=response_id,
            object="chat.completion",
            created=created,
            model=run.model,
            choices=[chat_choice(i, a, logprobs=logprobs) for i, a in enumerate(answers)],
            usage=openai_usage(run.usage()),
        )
