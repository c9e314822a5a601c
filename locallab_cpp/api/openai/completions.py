"""POST /v1/completions: OpenAI's (legacy) text completions over the serving core.

A prompt string, or a list of them (``n`` choices per prompt, in prompt order), continued
as it is; ``suffix`` asks for the text between prompt and suffix (fill-in-the-middle) on
models that have FIM tokens.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api.openai.common import (
    choices_of,
    completion_logprobs,
    engine_for,
    max_tokens_of,
    new_id,
    now,
    sampling_from,
    usage_per_prompt,
)
from locallab_cpp.api.openai.protocol import CompletionRequest
from locallab_cpp.api.openai.responses import CompletionChoice, TextCompletion
from locallab_cpp.api.openai.streaming import completion_events
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import GenerationInput
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.sse import EventStream, event_stream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import fim
from locallab_cpp.serving import generation as serving

MAX_TOKENS_DEFAULT = 16
"""OpenAI's default for /v1/completions (unlike chat, which runs to the context's end)."""

_DOC = (
    "OpenAI's text completions. `prompt` is a string or a list of strings (one choice per "
    "prompt, or `n`); token-id prompts are refused. `suffix` asks for fill-in-the-middle "
    "and needs a model with FIM tokens. With `stream: true`: `data: {text_completion}` "
    "events, then `data: [DONE]`."
)


def prompt_texts(prompt: str | list[Any]) -> list[str]:
    """The prompts as strings; 400 for token ids, which this server does not take."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise InvalidRequest(
        "Invalid request: 'prompt': token-id prompts are not supported; send the prompt as "
        "a string or a list of strings."
    )


async def prompt_tokens(
    engine: Engine, text: str, suffix: str | None, max_tokens: int | None = None
) -> serving.Tokens:
    """A prompt's tokens: the text itself, or the FIM prompt around ``suffix`` (serving/fim.py,
    trimmed to leave ``max_tokens`` of room)."""
    if suffix is None:
        return await serving.tokenize(engine, text)
    built = await fim.fim_prompt(engine, prefix=text, suffix=suffix, max_tokens=max_tokens)
    if built is None:
        raise InvalidRequest(
            f"Invalid request: 'suffix': model '{engine.info.model_id}' has no "
            "fill-in-the-middle tokens, so it cannot complete between a prompt and a suffix. "
            "Leave suffix out, or use a model trained for FIM (e.g. a Qwen2.5-Coder)."
        )
    return built.tokens


class CompletionsController(Controller):
    """POST /v1/completions."""

    tags = ["OpenAI"]

    @post("/completions", status_code=200, summary="Text completion (OpenAI)", description=_DOC)
    async def completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CompletionRequest],
        models: NamedDependency[ModelManager],
    ) -> TextCompletion | EventStream:
        """Continue each prompt ``n`` times."""
        n = choices_of(data, models)
        if data.best_of is not None and data.best_of > n:
            raise InvalidRequest(
                "Invalid request: 'best_of': choosing the best of more than n completions is "
                "not supported; leave best_of out or set it to n."
            )
        texts = prompt_texts(data.prompt)
        engine = await engine_for(models, data.model)
        max_tokens = max_tokens_of(engine, data.max_tokens, MAX_TOKENS_DEFAULT)
        prompts = [await prompt_tokens(engine, text, data.suffix, max_tokens) for text in texts]
        sampling = sampling_from(data)
        inputs = [
            GenerationInput(
                prompt_tokens=prompt,
                sampling=sampling,
                max_tokens=max_tokens,
                stop=data.stop_strings(),
                logprobs=data.logprobs,
                n=n,
            )
            for prompt in prompts
        ]
        handles = serving.submit(engine, inputs)
        # Handles come prompt by prompt, each prompt's n copies together: choice i is
        # prompt i // n, as OpenAI orders them.
        echoes = [texts[i // n] if data.echo else "" for i in range(len(handles))]
        response_id, created, model = new_id("cmpl"), now(), engine.info.model_id

        def make(choices: list[CompletionChoice]) -> TextCompletion:
            return TextCompletion(
                id=response_id,
                object="text_completion",
                created=created,
                model=model,
                choices=choices,
            )

        if data.stream:
            return event_stream(
                completion_events(
                    handles,
                    make,
                    n=n,
                    echoes=echoes,
                    logprobs=data.logprobs,
                    include_usage=data.include_usage,
                )
            )
        done = await unless_disconnected(request, serving.collect(handles))
        choices = []
        for index, (c, echo) in enumerate(zip(done, echoes, strict=True)):
            logprobs = None
            if data.logprobs is not None:
                logprobs = completion_logprobs(c.logprobs, len(echo), top=data.logprobs > 0)
            choices.append(
                CompletionChoice(
                    index=index,
                    text=echo + c.text,
                    logprobs=logprobs,
                    finish_reason=c.finish_reason,
                )
            )
        response = make(choices)
        response.usage = usage_per_prompt(done, n)
        return response
