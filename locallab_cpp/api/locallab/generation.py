"""POST /generate, /chat and /generate/batch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import JSONBody

from locallab_cpp.api.locallab.protocol import (
    DEFAULT_DO_SAMPLE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    AssistantMessage,
    BatchRequest,
    BatchResponse,
    ChatChoice,
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    GenerationParams,
    Usage,
)
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import Completion, GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.errors import ClientDisconnected
from locallab_cpp.http.sse import EventStream, event_stream, stream_events
from locallab_cpp.models.manager import ModelManager

# Tokenizing is fast C code, but a prompt this long is worth moving off the event loop.
OFFLOOP_TOKENIZE_CHARS = 16_384

_STREAM_DOC = (
    'With "stream": true the reply is text/event-stream: one `data:` event per chunk of '
    "text (a chunk with newlines is several `data:` lines in one event), then "
    "`data: [DONE]`. Errors after the stream began arrive as `event: error`."
)


def sampling_from(params: GenerationParams) -> SamplingParams:
    """The request's sampling settings, defaults filled in for null or absent fields."""
    return SamplingParams(
        temperature=_default(params.temperature, DEFAULT_TEMPERATURE),
        top_p=_default(params.top_p, DEFAULT_TOP_P),
        top_k=_default(params.top_k, DEFAULT_TOP_K),
        repetition_penalty=_default(params.repetition_penalty, DEFAULT_REPETITION_PENALTY),
        do_sample=_default(params.do_sample, DEFAULT_DO_SAMPLE),
        seed=params.seed,
    )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


async def _tokenize(engine: Engine, text: str, *, add_bos: bool = True) -> tuple[int, ...]:
    if len(text) > OFFLOOP_TOKENIZE_CHARS:
        return tuple(await asyncio.to_thread(engine.tokenize, text, add_bos=add_bos))
    return tuple(engine.tokenize(text, add_bos=add_bos))


def _inputs(
    params: GenerationParams, prompts: Sequence[tuple[int, ...]], extra_stop: tuple[str, ...] = ()
) -> list[GenerationInput]:
    sampling = sampling_from(params)
    max_tokens = _default(params.max_length, DEFAULT_MAX_LENGTH)
    stop = params.stop_strings() + extra_stop
    return [GenerationInput(p, sampling, max_tokens, stop) for p in prompts]


def _usage(done: Sequence[Completion]) -> Usage:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(c.completion_tokens for c in done)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_prompt_tokens=sum(c.cached_tokens for c in done),
    )


async def _wait_for_disconnect(request: Request[Any, Any, Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(
    request: Request[Any, Any, Any], work: Awaitable[list[Completion]]
) -> list[Completion]:
    """Await ``work`` but give up as soon as the client hangs up.

    Without this a client that gives up on a long non-streamed generation would keep a slot
    busy until max_length. Cancelling ``work`` cancels its generations.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task not in done:
        raise ClientDisconnected()
    return task.result()


async def _collect(handles: Sequence[GenerationHandle]) -> list[Completion]:
    try:
        return list(await asyncio.gather(*(h.result() for h in handles)))
    finally:
        for handle in handles:
            handle.cancel()  # a no-op for the finished ones


def _sse(handle: GenerationHandle) -> EventStream:
    return event_stream(stream_events(handle))


class GenerationController(Controller):
    """Text generation over the loaded model."""

    tags = ["Generation"]

    @post(
        "/generate",
        status_code=200,
        summary="Continue a prompt",
        description=_STREAM_DOC,
        response_description="The generated text with real token counts",
    )
    async def generate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[GenerateRequest],
        models: NamedDependency[ModelManager],
    ) -> GenerateResponse | EventStream:
        """Generate a continuation of ``prompt``."""
        engine = await models.engine_for(data.model_id)
        prompt = await _tokenize(engine, data.prompt)
        [handle] = engine.submit(_inputs(data, [prompt]))
        if data.stream:
            return _sse(handle)
        [done] = await _unless_disconnected(request, _collect([handle]))
        return GenerateResponse(
            response=done.text,
            text=done.text,
            model=engine.info.model_id,
            finish_reason=done.finish_reason,
            usage=_usage([done]),
        )

    @post(
        "/chat",
        status_code=200,
        summary="Chat completion",
        description="The prompt is built with the model's chat template. " + _STREAM_DOC,
    )
    async def chat(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatRequest],
        models: NamedDependency[ModelManager],
    ) -> ChatResponse | EventStream:
        """Answer the conversation in ``messages`` as the assistant."""
        engine = await models.engine_for(data.model_id)
        rendered = engine.chat_prompt(
            [{"role": m.role, "content": m.content} for m in data.messages]
        )
        prompt = await _tokenize(engine, rendered.text, add_bos=not rendered.has_bos_text)
        [handle] = engine.submit(_inputs(data, [prompt], rendered.stop))
        if data.stream:
            return _sse(handle)
        [done] = await _unless_disconnected(request, _collect([handle]))
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            object="chat.completion",
            created=int(time.time()),
            model=engine.info.model_id,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(role="assistant", content=done.text),
                    finish_reason=done.finish_reason,
                )
            ],
            usage=_usage([done]),
        )

    @post(
        "/generate/batch",
        status_code=200,
        summary="Generate for several prompts at once",
        description="All prompts are decoded together in the engine's parallel slots; "
        "the responses keep the order of the prompts.",
        request_examples=[
            Example(value={"prompts": ["Write a haiku about nature", "Tell a short joke"]})
        ],
    )
    async def batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BatchRequest],
        models: NamedDependency[ModelManager],
    ) -> BatchResponse:
        """Generate one response per prompt."""
        engine = await models.engine_for(data.model_id)
        prompts = [await _tokenize(engine, p) for p in data.prompts]
        handles = engine.submit(_inputs(data, prompts))
        done = await _unless_disconnected(request, _collect(handles))
        return BatchResponse(
            responses=[c.text for c in done],
            model=engine.info.model_id,
            finish_reasons=[c.finish_reason for c in done],
            usage=_usage(done),
        )
