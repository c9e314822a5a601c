"""One /infill generation: the FIM prompt (serving/fim.py), the engine input, and the
answer llama-server gives, with its ``t_max_predict_ms`` cut.

``t_max_predict_ms`` is llama-server's: once that many ms have passed since the first
generated token *and* the text holds a newline, generation stops (``stop_type: "limit"``).
It is checked as each chunk arrives, and the sequence is cancelled in the engine; the
token count of a cut answer is its text tokenized again, and its timings are measured
here (the engine reports none for a cancelled sequence).

A request superseded by the same client's next one (serving/supersede.py) ends the same
way, at once, with ``stop_type: "superseded"`` and the text it had.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from locallab_cpp.api.infill.protocol import InfillRequest
from locallab_cpp.engine.base import Engine
from locallab_cpp.engine.types import (
    Finished,
    GenerationHandle,
    GenerationInput,
    SamplingParams,
)
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving import fim, generation
from locallab_cpp.serving.supersede import Running, Superseded

# llama-server's sampling defaults (common_params_sampling), for fields a client leaves out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05


def sampling_of(data: InfillRequest) -> SamplingParams:
    """The request's sampling, llama-server's defaults for absent fields."""
    return SamplingParams(
        temperature=DEFAULT_TEMPERATURE if data.temperature is None else data.temperature,
        top_k=DEFAULT_TOP_K if data.top_k is None else data.top_k,
        top_p=DEFAULT_TOP_P if data.top_p is None else data.top_p,
        min_p=DEFAULT_MIN_P if data.min_p is None else data.min_p,
        repetition_penalty=1.0 if data.repeat_penalty is None else data.repeat_penalty,
        seed=data.seed if data.seed is not None and data.seed >= 0 else None,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A submitted /infill generation."""

    handle: GenerationHandle
    prompt_tokens: int
    truncated: bool
    warm_only: bool
    """``n_predict: 0``: the prompt is computed (and cached) but nothing is answered."""
    running: Running | None = None
    """Its entry in the supersede registry (None: it takes no part, a cache warm-up)."""


async def start(engine: Engine, data: InfillRequest, running: Running | None = None) -> Prepared:
    """Build the prompt and submit it; 400 for a model without FIM tokens. ``running``
    follows the generation, to cancel it when the request is superseded."""
    n_predict = data.n_predict if data.n_predict is not None else -1
    limit = None if n_predict < 0 else max(n_predict, 1)
    extra = [
        fim.ExtraChunk(filename=c.filename or "tmp", text=c.text or "")
        for c in data.input_extra or ()
    ]
    built = await fim.fim_prompt(
        engine,
        prefix=data.input_prefix or "",
        suffix=data.input_suffix or "",
        prompt=data.prompt or "",
        extra=extra,
        max_tokens=limit,
    )
    if built is None:
        raise InvalidRequest(
            f"Invalid request: model '{engine.info.model_id}' has no fill-in-the-middle "
            "tokens, so /infill cannot complete between a prefix and a suffix. Use a model "
            "trained for FIM, e.g. a Qwen2.5-Coder (POST /models/load)."
        )
    max_tokens = limit if limit is not None else engine.info.n_ctx
    inp = GenerationInput(
        prompt_tokens=built.tokens,
        sampling=sampling_of(data),
        max_tokens=max_tokens,
        stop=tuple(s for s in data.stop or () if s),
        checkpoint_at=built.checkpoint_at,
    )
    [handle] = generation.submit(engine, [inp])
    if running is not None:
        running.attach(handle)  # superseded already: cancelled at once
    return Prepared(handle, len(built.tokens), built.truncated, n_predict == 0, running)


def _timings(
    prompt_n: int, prompt_s: float, predicted_n: int, predicted_s: float, cached: int
) -> dict[str, float]:
    prompt_ms, predicted_ms = prompt_s * 1000.0, predicted_s * 1000.0
    return {
        "cache_n": cached,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": prompt_n / prompt_s if prompt_s > 0 else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
        "predicted_per_second": predicted_n / predicted_s if predicted_s > 0 else 0.0,
    }


def final_fields(
    prepared: Prepared,
    model: str,
    content: str,
    *,
    stop_type: str,
    stopping_word: str,
    predicted: int,
    cached: int,
    prompt_s: float,
    predicted_s: float,
) -> dict[str, Any]:
    """The figures of the answer's end (the whole answer, or the stream's last event)."""
    prompt = prepared.prompt_tokens
    return {
        "index": 0,
        "content": content,
        "model": model,
        "stop": True,
        "stop_type": stop_type,
        "stopping_word": stopping_word,
        "has_new_line": "\n" in content,
        "tokens_predicted": predicted,
        "tokens_evaluated": prompt,
        "tokens_cached": cached,
        "truncated": prepared.truncated,
        "timings": _timings(prompt - cached, prompt_s, predicted, predicted_s, cached),
    }


async def run(
    engine: Engine, prepared: Prepared, time_limit_ms: int | None
) -> AsyncGenerator[str | dict[str, Any], None]:
    """The generated text as it comes, then the final fields (content empty: the caller
    knows the text). Leaving early cancels the generation."""
    handle, started = prepared.handle, time.perf_counter()
    first: float | None = None
    parts: list[str] = []

    def cut(stop_type: str) -> dict[str, Any]:
        """The final fields of a generation ended here (time limit, superseded)."""
        now = time.perf_counter()
        text = "".join(parts)
        begun = started if first is None else first
        return final_fields(
            prepared,
            engine.info.model_id,
            "",
            stop_type=stop_type,
            stopping_word="",
            predicted=len(engine.tokenize(text, add_bos=False, special=False)) if text else 0,
            cached=0,  # the engine reports nothing for a cancelled sequence
            prompt_s=begun - started,
            predicted_s=now - begun,
        )

    try:
        async for event in handle.events():
            if isinstance(event, Finished):
                stop_type = "limit" if event.finish_reason == "length" else "eos"
                if event.stop_sequence is not None:
                    stop_type = "word"
                yield final_fields(
                    prepared,
                    engine.info.model_id,
                    "",
                    stop_type=stop_type,
                    stopping_word=event.stop_sequence or "",
                    predicted=0 if prepared.warm_only else event.completion_tokens,
                    cached=event.cached_tokens,
                    prompt_s=event.prompt_seconds,
                    predicted_s=event.generation_seconds,
                )
                return
            now = time.perf_counter()
            first = now if first is None else first
            if prepared.warm_only or not event.text:
                continue
            parts.append(event.text)
            yield event.text
            if (
                time_limit_ms
                and (now - first) * 1000.0 > time_limit_ms
                and any("\n" in p for p in parts)
            ):
                handle.cancel()
                yield cut("limit")
                return
    except Superseded:  # the same client sent its next request: what it had, at once
        yield cut("superseded")
    finally:
        handle.cancel()  # a no-op once it finished; leaving early stops it
        if prepared.running is not None:
            prepared.running.finish()
