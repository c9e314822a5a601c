"""POST /v1/responses, GET and DELETE /v1/responses/{id}: OpenAI's Responses API over the
serving core, with OpenAI's error format (it lives under /v1).

The request becomes serving's ChatRequest (translate.py), so tool calls, grammars, the
reasoning split, limits and prompt reuse are chat completions' own; this module only
shapes the answer: whole (render.py) or streamed (stream.py).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from locallab_cpp.api import Api
from locallab_cpp.api.openai.errors import OPENAI_ERRORS
from locallab_cpp.api.responses.objects import DeletedResponse, ResponseObject
from locallab_cpp.api.responses.protocol import InputItem, ResponseRequest
from locallab_cpp.api.responses.render import (
    base_response,
    finish,
    new_id,
    output_items,
    usage_of,
)
from locallab_cpp.api.responses.store import ResponseStore
from locallab_cpp.api.responses.stream import ResponseEvents, response_events
from locallab_cpp.api.responses.translate import ToolNames, chat_request, input_items
from locallab_cpp.errors import NotFound
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream, event_stream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import ChatRun, start_chat

_DOC = (
    "OpenAI's Responses API (what Codex CLI and the Agents SDK speak). `input` is a string "
    "or a list of items; with `stream: true` the reply is text/event-stream of named "
    "`response.*` events. `store: true` keeps the response in memory (bounded) for "
    "`previous_response_id` and GET; the default is false."
)


def store_of(state: State, models: ModelManager) -> ResponseStore:
    """The app's response store, made on first use (its size is a setting)."""
    store: ResponseStore | None = getattr(state, "responses_store", None)
    if store is None:
        store = ResponseStore(models.settings.responses_store)
        state.responses_store = store
    return store


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id {response_id[:80]!r} not found: only responses created with "
        "store: true are kept, in memory, until the server restarts or drops them "
        "(least recently used first)."
    )


def _count_tokens(models: ModelManager, text: str) -> int:
    engine = models.engine
    return len(engine.tokenize(text, add_bos=False)) if engine is not None and text else 0


class ResponsesController(Controller):
    """/v1/responses."""

    tags = ["OpenAI"]

    @post("/", status_code=200, summary="Create a response (OpenAI Responses)", description=_DOC)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ResponseRequest],
        models: NamedDependency[ModelManager],
    ) -> ResponseObject | EventStream:
        """Answer ``input`` (after a stored ``previous_response_id``'s conversation)."""
        store = store_of(request.app.state, models)
        earlier: tuple[InputItem, ...] = ()
        if data.previous_response_id is not None:
            stored = store.get(data.previous_response_id)
            if stored is None:
                raise _not_found(data.previous_response_id)
            earlier = stored.conversation
        items = [*earlier, *input_items(data, store.item)]
        names = ToolNames()
        chat = chat_request(data, models, items, names)
        model = chat.model or models.current_id or (data.model or "")
        response = base_response(data, new_id("resp"), model)

        def keep(done: ResponseObject) -> None:
            if data.store:
                store.put(done, items)

        if data.stream:

            async def start() -> ChatRun:
                return await start_chat(models, chat)

            stream = response_events(
                ResponseEvents(response, names),
                start,
                lambda text: _count_tokens(models, text),
                keep,
            )
            return event_stream(stream)
        run = await start_chat(models, chat)
        [answer] = await unless_disconnected(request, run.collect())
        response.model = run.model
        usage = usage_of(run.usage(), _count_tokens(models, answer.reasoning))
        finish(response, output_items(answer, names), answer.finished, usage)
        keep(response)
        return response

    @get("/{response_id:str}", summary="A stored response (OpenAI Responses)")
    async def retrieve(
        self,
        request: Request[Any, Any, Any],
        response_id: FromPath[str],
        models: NamedDependency[ModelManager],
    ) -> ResponseObject:
        """A response created with ``store: true``; 404 for any other id."""
        stored = store_of(request.app.state, models).get(response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored.response

    @delete("/{response_id:str}", status_code=200, summary="Delete a stored response")
    async def remove(
        self,
        request: Request[Any, Any, Any],
        response_id: FromPath[str],
        models: NamedDependency[ModelManager],
    ) -> DeletedResponse:
        """Forget a stored response; 404 when none has this id."""
        if not store_of(request.app.state, models).delete(response_id):
            raise _not_found(response_id)
        return DeletedResponse(id=response_id)


RESPONSES_API = Api(
    name="responses",
    prefix="/v1/responses",
    routes=(ResponsesController,),
    errors=OPENAI_ERRORS,
)
"""/v1/responses and /v1/responses/{id}, with OpenAI's errors."""
