"""Anthropic's Messages API over the serving core: POST /v1/messages and
POST /v1/messages/count_tokens, with Anthropic's errors on every path under /v1/messages.

The request is translated into serving's ChatRequest (translate.py); serving/chat.py
renders, plans and submits; render.py shapes the neutral events as Anthropic's message or
its stream. A query string (Claude Code's ``?beta=true``) and the ``anthropic-version`` /
``anthropic-beta`` headers are ignored, whatever their values.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api import Api
from locallab_cpp.api.anthropic.errors import ANTHROPIC_ERRORS
from locallab_cpp.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from locallab_cpp.api.anthropic.render import message_of, message_stream, new_message_id
from locallab_cpp.api.anthropic.responses import CountTokensResponse, Message
from locallab_cpp.api.anthropic.translate import chat_request, check, plan_of, turns_of
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import count_prompt, start_chat

_DOC = (
    "Anthropic's Messages API. Any `model` name (claude-sonnet-4-5...) means the loaded "
    "model unless it is a model id of GET /v1/models or a --model-alias, and is echoed in "
    "the answer. `max_tokens` is a ceiling: the answer ends where the context does, with "
    "stop_reason max_tokens. With `stream: true` the reply is text/event-stream: "
    "message_start, content blocks, message_delta, message_stop (ping while the prompt is "
    "computed)."
)


async def _add_request_id(response: Response[Any]) -> Response[Any]:
    # Anthropic's SDKs keep it as the response's ``_request_id``; a log line can name it.
    response.headers["request-id"] = "req_" + uuid.uuid4().hex[:24]
    return response


class MessagesController(Controller):
    """POST /v1/messages and /v1/messages/count_tokens."""

    tags = ["Anthropic"]

    @post(
        "/",
        status_code=200,
        summary="Create a message (Anthropic)",
        description=_DOC,
        after_request=_add_request_id,
    )
    async def create_message(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[MessagesRequest],
        models: NamedDependency[ModelManager],
    ) -> Message | EventStream:
        """Answer ``messages`` as the assistant, calling ``tools`` where it chooses to."""
        # Rendered and queued before the response starts: a prompt too long for the
        # context, a busy server or a bad request is a plain error response, not a stream.
        run = await start_chat(models, chat_request(data, models))
        message_id = new_message_id()
        if data.stream:
            return message_stream(run, message_id, data.model)
        [answer] = await unless_disconnected(request, run.collect())
        return message_of(message_id, data.model, answer)

    @post(
        "/count_tokens",
        status_code=200,
        after_request=_add_request_id,
        summary="Count a message's prompt tokens (Anthropic)",
        description="The prompt of the same Messages request, rendered and tokenized as "
        "POST /v1/messages would (tools included); nothing is generated.",
    )
    async def count_tokens(
        self, data: JSONBody[CountTokensRequest], models: NamedDependency[ModelManager]
    ) -> CountTokensResponse:
        """``{"input_tokens": N}``."""
        check(data)
        tokens = await count_prompt(
            models, turns_of(data), model=models.resolve(data.model), tools=plan_of(data)
        )
        return CountTokensResponse(input_tokens=tokens)


ANTHROPIC_API = Api(
    name="anthropic",
    prefix="/v1/messages",
    routes=(MessagesController,),
    errors=ANTHROPIC_ERRORS,
)
"""/v1/messages and /v1/messages/count_tokens, with Anthropic's error bodies."""
