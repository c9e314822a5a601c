"""What chat and text completions translate the same way: the model a request names,
OpenAI's sampling defaults, ``n``, usage and the two shapes of logprobs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from locallab_cpp.api.openai.protocol import SamplingFields
from locallab_cpp.api.openai.responses import (
    ChoiceLogprobs,
    CompletionLogprobs,
    PromptTokensDetails,
    TokenLogprobOut,
    TopLogprob,
    Usage,
)
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import SamplingParams, TokenLogprob
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.generation import Counted, TokenUsage, usage_of

# OpenAI's defaults: the model's own distribution, nothing cut, nothing penalized.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
OWNED_BY = "locallab"


def model_id_of(models: ModelManager, name: str | None) -> str | None:
    """The registry id a request's ``model`` means, or None: the loaded model.

    Clients must send some model name and most send one of OpenAI's ("gpt-4o-mini"), so
    any name this server does not know means the loaded model; a registry id (or a
    --model-alias of one) loads that model, as LocalLab's ``model_id`` does.
    """
    return models.resolve(name)


async def engine_for(models: ModelManager, name: str | None) -> Engine:
    """The engine for a request's ``model`` (:func:`model_id_of`)."""
    return await models.engine_for(model_id_of(models, name))


def sampling_from(data: SamplingFields) -> SamplingParams:
    """The request's sampling settings, OpenAI's defaults for null or absent fields."""
    return SamplingParams(
        temperature=DEFAULT_TEMPERATURE if data.temperature is None else data.temperature,
        top_p=DEFAULT_TOP_P if data.top_p is None else data.top_p,
        top_k=0,
        repetition_penalty=1.0,
        seed=data.seed,
        presence_penalty=data.presence_penalty or 0.0,
        frequency_penalty=data.frequency_penalty or 0.0,
        logit_bias=_logit_bias(data),
    )


def _logit_bias(data: SamplingFields) -> tuple[tuple[int, float], ...]:
    pairs = []
    for key, bias in (data.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(
                f"Invalid request: 'logit_bias': keys are token ids, and {key[:40]!r} is not one."
            ) from None
        pairs.append((token, float(bias)))
    return tuple(pairs)


def choices_of(data: SamplingFields, models: ModelManager) -> int:
    """``n``, checked against the server's ``max_n`` setting."""
    n = data.n or 1
    limit = models.settings.max_n
    if n > limit:
        raise InvalidRequest(
            f"Invalid request: 'n': this server generates at most {limit} choices per request "
            "(its max_n setting)."
        )
    return n


def max_tokens_of(engine: Engine, *limits: int | None) -> int:
    """The first limit the client gave, else the whole context: the engine caps every
    sequence at what is left of its slot after the prompt."""
    return next((limit for limit in limits if limit is not None), engine.info.n_ctx)


def new_id(prefix: str) -> str:
    """A response id such as ``chatcmpl-...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """``created``: seconds since the epoch."""
    return int(time.time())


def usage_per_prompt(done: Sequence[Counted], n: int) -> Usage:
    """Usage of ``n`` choices per prompt, each prompt counted once (serving's usage_of)."""
    return openai_usage(usage_of(done, n))


def openai_usage(totals: TokenUsage) -> Usage:
    """Serving's token counts in OpenAI's shape."""
    return Usage(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=totals.cached_prompt_tokens),
    )


# ----- logprobs ------------------------------------------------------------------------------


def chat_logprobs(tokens: Iterable[TokenLogprob]) -> ChoiceLogprobs:
    """OpenAI's chat shape: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=t.text,
                logprob=t.logprob,
                bytes=list(t.piece),
                top_logprobs=[
                    TopLogprob(token=alt.text, logprob=alt.logprob, bytes=list(alt.piece))
                    for alt in t.top
                ],
            )
            for t in tokens
        ]
    )


def completion_logprobs(
    tokens: Sequence[TokenLogprob], offset: int = 0, *, top: bool = True
) -> CompletionLogprobs:
    """The legacy completions shape; ``text_offset`` counts characters from ``offset``
    (the echoed prompt's length, else 0). With ``logprobs: 0`` the top entries hold the
    chosen token alone, as OpenAI's did."""
    offsets = []
    position = offset
    for t in tokens:
        offsets.append(position)
        position += len(t.text)
    return CompletionLogprobs(
        tokens=[t.text for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[
            {alt.text: alt.logprob for alt in t.top} if top and t.top else {t.text: t.logprob}
            for t in tokens
        ],
        text_offset=offsets,
    )
