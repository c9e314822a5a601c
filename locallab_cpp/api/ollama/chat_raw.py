"""/api/generate with ``raw: true`` or a ``suffix``: a prompt that no chat template renders.

``raw`` sends the prompt as it is, tokenized as text (as /v1/completions does); ``suffix``
asks for the text between ``prompt`` and ``suffix`` with the model's fill-in-the-middle
tokens (serving/fim.py, the builder /infill uses too; a model without them is a 400 that
says what to do). The generation is read by the same AnswerStream as a chat answer (no
tools), so it is rendered the same way; its reasoning is split off only when ``think`` is
on: a raw prompt or a piece of code may well start with ``<think>`` as text.
"""

from __future__ import annotations

import asyncio

from locallab_cpp.api.ollama.chat_options import Settings
from locallab_cpp.api.ollama.chat_protocol import GenerateBody
from locallab_cpp.api.ollama.chat_translate import json_schema_of
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.schema import checked_grammar, grammar_for_json_schema
from locallab_cpp.engine.types import GenerationInput
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving import fim, generation
from locallab_cpp.serving.answer import AnswerStream
from locallab_cpp.serving.chat import ChatRun


async def prompt_tokens(
    engine: Engine, data: GenerateBody, max_tokens: int | None = None
) -> generation.Tokens:
    """The raw prompt's tokens, or the FIM prompt around ``suffix`` (trimmed to leave
    ``max_tokens`` of room)."""
    prompt = data.prompt or ""
    if data.suffix is None:
        return await generation.tokenize(engine, prompt)
    built = await fim.fim_prompt(engine, prefix=prompt, suffix=data.suffix, max_tokens=max_tokens)
    if built is None:
        raise InvalidRequest(
            f"Invalid request: 'suffix': model '{engine.info.model_id}' has no "
            "fill-in-the-middle tokens, so it cannot complete between a prompt and a suffix. "
            "Leave suffix out, or use a model trained for FIM (e.g. a Qwen2.5-Coder); "
            "POST /api/show lists 'insert' in the capabilities of those that can."
        )
    return built.tokens


async def start_raw(engine: Engine, data: GenerateBody, settings: Settings) -> ChatRun:
    """Submit the raw or FIM prompt; raises what submitting raises (ContextLengthExceeded,
    ServerBusy, InvalidRequest for a schema the grammar converter refuses)."""
    tokens = await prompt_tokens(engine, data, settings.max_tokens)
    schema = json_schema_of(data.format)
    grammar = None
    if schema is not None:  # a large schema takes a while to convert: a worker thread does
        grammar = await asyncio.to_thread(lambda: checked_grammar(grammar_for_json_schema(schema)))
    inp = GenerationInput(
        prompt_tokens=tokens,
        sampling=settings.sampling,
        max_tokens=settings.max_tokens if settings.max_tokens is not None else engine.info.n_ctx,
        stop=settings.stop,
        grammar=grammar,
    )
    handles = generation.submit(engine, [inp])
    stream = AnswerStream(split_reasoning=data.think not in (None, False), stops=settings.stop)
    return ChatRun(engine.info.model_id, len(tokens), handles, [stream])
