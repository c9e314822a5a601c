"""POST /generate, /chat and /generate/batch: LocalLab's translation of the serving core.

What is LocalLab's own lives here: its sampling defaults (:func:`sampling_from`), its
request fields and its response shapes. Tokenizing, the context check, queueing and
collecting are :mod:`locallab_cpp.serving.generation`'s, a chat request
:mod:`locallab_cpp.serving.chat`'s, shared by every API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
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
from locallab_cpp.api.locallab.streaming import run_texts, stream_response
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import GenerationHandle, SamplingParams
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import generation as serving
from locallab_cpp.serving.chat import ChatRequest as ServingChatRequest
from locallab_cpp.serving.chat import start_chat
from locallab_cpp.serving.streaming import text_chunks
from locallab_cpp.serving.turns import Turn

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


def _submit(
    engine: Engine,
    params: GenerationParams,
    prompts: Sequence[serving.Tokens],
    extra_stop: tuple[str, ...] = (),
) -> list[GenerationHandle]:
    """Queue ``prompts`` with the request's settings, LocalLab's defaults filled in."""
    max_tokens = _default(params.max_length, DEFAULT_MAX_LENGTH)
    stop = params.stop_strings() + extra_stop
    inputs = serving.inputs_for(prompts, sampling_from(params), max_tokens, stop)
    return serving.submit(engine, inputs)


def _usage(totals: serving.TokenUsage) -> Usage:
    return Usage(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        cached_prompt_tokens=totals.cached_prompt_tokens,
    )


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
        prompt = await serving.tokenize(engine, data.prompt)
        [handle] = _submit(engine, data, [prompt])
        if data.stream:
            return stream_response(text_chunks(handle))
        [done] = await unless_disconnected(request, serving.collect([handle]))
        return GenerateResponse(
            response=done.text,
            text=done.text,
            model=engine.info.model_id,
            finish_reason=done.finish_reason,
            usage=_usage(serving.usage_of([done])),
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
        run = await start_chat(
            models,
            ServingChatRequest(
                turns=[Turn(m.role, m.content) for m in data.messages],
                sampling=sampling_from(data),
                max_tokens=_default(data.max_length, DEFAULT_MAX_LENGTH),
                model=data.model_id,
                stop=data.stop_strings(),
                # LocalLab's answer is the model's text as it wrote it, <think> included.
                split_reasoning=False,
            ),
        )
        if data.stream:
            return stream_response(run_texts(run))
        [answer] = await unless_disconnected(request, run.collect())
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            object="chat.completion",
            created=int(time.time()),
            model=run.model,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(role="assistant", content=answer.text),
                    # No tools are offered here, so the reason is the engine's own.
                    finish_reason="length" if answer.finished.reason == "length" else "stop",
                )
            ],
            usage=_usage(run.usage()),
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
        prompts = [await serving.tokenize(engine, p) for p in data.prompts]
        handles = _submit(engine, data, prompts)
        done = await unless_disconnected(request, serving.collect(handles))
        return BatchResponse(
            responses=[c.text for c in done],
            model=engine.info.model_id,
            finish_reasons=[c.finish_reason for c in done],
            usage=_usage(serving.usage_of(done)),
        )
