"""POST /api/chat and POST /api/generate: Ollama's chat and completion over the serving core.

The request is translated into serving's terms (chat_options.py, chat_translate.py,
chat_raw.py); serving/chat.py renders, plans and submits; chat_render.py shapes the neutral
events as Ollama's NDJSON chunks (the default) or one body (``stream: false``). Everything
that can be refused is refused before the stream begins, as a plain error response in
Ollama's body: an unknown model (404), a bad field, a prompt longer than the context (400).

An empty ``messages`` (or ``prompt``) loads the model and answers ``done_reason: "load"``;
with ``keep_alive: 0`` it unloads the model instead (``"unload"``), which is how Ollama's
clients load and unload. ``keep_alive`` on any request sets how long the model stays
loaded once idle (ModelManager.keep_alive).
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler

from locallab_cpp.api.ollama import chat_protocol as p
from locallab_cpp.api.ollama.chat_options import Settings, note_num_ctx, settings_of
from locallab_cpp.api.ollama.chat_raw import start_raw
from locallab_cpp.api.ollama.chat_render import Shape, Timing, answer_body, answer_lines
from locallab_cpp.api.ollama.chat_translate import (
    chat_request,
    check_generate,
    generate_request,
    thinking_of,
)
from locallab_cpp.api.ollama.keepalive import parse_keep_alive
from locallab_cpp.api.ollama.names import model_of
from locallab_cpp.engine.base import Engine
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.ndjson import NdjsonStream, ndjson_line, ndjson_stream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.chat import ChatRequest, ChatRun, start_chat

Answer = p.ChatChunk | p.GenerateChunk | NdjsonStream

KeepAlive = tuple[float | None] | None
"""``(seconds,)`` when the request carries keep_alive (None: for ever), else None."""

_CHAT_DOC = (
    "Ollama's chat. NDJSON chunks (`message.content`, `message.thinking`, "
    "`message.tool_calls` with object arguments) unless `stream: false`; the last has "
    "`done: true`, `done_reason` and measured counts and durations (nanoseconds). Empty "
    "`messages` loads the model (`done_reason: load`), with `keep_alive: 0` unloads it."
)
_GENERATE_DOC = (
    "Ollama's completion: `prompt` as one user turn through the chat template, or as it "
    "is with `raw: true`; `suffix` for fill-in-the-middle (models with FIM tokens). "
    "`template` overrides and `images` are refused with a 400."
)


class OllamaChatController(Controller):
    """POST /api/chat and /api/generate."""

    tags = ["Ollama"]

    @post("/chat", status_code=200, summary="Chat (Ollama)", description=_CHAT_DOC)
    async def chat(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[p.ChatBody],
        models: NamedDependency[ModelManager],
    ) -> Answer:
        """Answer ``messages`` as the assistant, calling ``tools`` where it chooses to."""
        timing = Timing()
        model_id = model_of(models, data.model, on_disk=not models.settings.pull_on_demand)
        keep = _keep_alive(data)
        shape = Shape(data.model, chat=True, show_thinking=thinking_of(data.think).show)
        if not data.messages:
            return await _load_only(models, model_id, keep, shape, data.streamed)
        settings = settings_of(data.options)
        chat = chat_request(data, model_id, settings)  # every 400 before the model loads
        await _engine(models, model_id, timing, settings)
        run = await start_chat(models, chat)
        return await _answer(request, models, model_id, keep, shape, run, timing, data.streamed)

    @post("/generate", status_code=200, summary="Generate (Ollama)", description=_GENERATE_DOC)
    async def generate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[p.GenerateBody],
        models: NamedDependency[ModelManager],
    ) -> Answer:
        """Continue ``prompt`` (through the template, raw, or between it and ``suffix``)."""
        timing = Timing()
        model_id = model_of(models, data.model, on_disk=not models.settings.pull_on_demand)
        keep = _keep_alive(data)
        check_generate(data)
        shape = Shape(data.model, chat=False, show_thinking=thinking_of(data.think).show)
        if not data.prompt and data.suffix is None:
            return await _load_only(models, model_id, keep, shape, data.streamed)
        settings = settings_of(data.options)
        chat: ChatRequest | None = None
        if not data.raw and data.suffix is None:
            chat = generate_request(data, model_id, settings)
        engine = await _engine(models, model_id, timing, settings)
        run = await (start_chat(models, chat) if chat else start_raw(engine, data, settings))
        return await _answer(request, models, model_id, keep, shape, run, timing, data.streamed)


def _keep_alive(data: p.ChatBody | p.GenerateBody) -> KeepAlive:
    """The request's keep_alive (see KeepAlive); 400 for a value that is no duration."""
    return None if data.keep_alive is None else (parse_keep_alive(data.keep_alive),)


def _apply_keep_alive(models: ModelManager, model_id: str, keep: KeepAlive) -> None:
    if keep is not None:
        models.keep_alive(model_id, keep[0])


async def _engine(
    models: ModelManager, model_id: str, timing: Timing, settings: Settings
) -> Engine:
    """The model's engine; the time a load this request caused took goes to ``timing``."""
    current = models.resident(model_id)
    loaded = current is not None and not current.failed
    started = time.perf_counter_ns()
    engine = await models.engine_for(model_id)
    if not loaded:
        timing.load_ns = time.perf_counter_ns() - started
    note_num_ctx(settings, engine.info.n_ctx)
    return engine


async def _load_only(
    models: ModelManager, model_id: str, keep: KeepAlive, shape: Shape, streamed: bool
) -> Answer:
    """An empty prompt: load the model (or, with keep_alive 0, unload it)."""
    if keep is not None and keep[0] == 0:
        await models.unload_model(model_id)
        out = shape.loaded("unload")
    else:
        await models.engine_for(model_id)
        _apply_keep_alive(models, model_id, keep)
        out = shape.loaded("load")
    if not streamed:
        return out

    async def one() -> Any:
        yield ndjson_line(out)

    return ndjson_stream(one())


async def _answer(
    request: Request[Any, Any, Any],
    models: ModelManager,
    model_id: str,
    keep: KeepAlive,
    shape: Shape,
    run: ChatRun,
    timing: Timing,
    streamed: bool,
) -> Answer:
    # Set once the generation is queued, so that keep_alive 0 unloads after it, not before.
    _apply_keep_alive(models, model_id, keep)
    if streamed:
        return ndjson_stream(answer_lines(shape, run, timing))
    [answer] = await unless_disconnected(request, run.collect())
    return answer_body(shape, answer, timing)


CHAT_ROUTES: tuple[ControllerRouterHandler, ...] = (OllamaChatController,)
"""The chat and generate routes."""
