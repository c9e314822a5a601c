"""The body of POST /infill and its answer, as llama.vim and llama.vscode send and read them.

Lenient as llama-server is: unknown fields are ignored (llama.vim sends ``n_indent``,
``t_max_prompt_ms``, ``samplers``, ``cache_prompt``...), every optional field takes null.
``samplers`` (the sampler order) is accepted and ignored: ours is fixed. The prompt cache
is always on, so ``cache_prompt`` changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

MAX_TEXT = 16_000_000
MAX_EXTRA = 4096

Text = Annotated[str, Meta(max_length=MAX_TEXT)]


class _Lenient(msgspec.Struct, kw_only=True):
    """Unknown fields are ignored (msgspec's default for a Struct)."""


class ExtraChunkBody(_Lenient):
    """A chunk of another file (llama.vim's ring buffer of yanked and visited text)."""

    text: Text | None = None
    filename: Annotated[str, Meta(max_length=4096)] | None = None


class InfillRequest(_Lenient):
    """POST /infill."""

    input_prefix: Text | None = None
    """The text before the cursor (whole lines)."""
    input_suffix: Text | None = None
    """The text after the cursor."""
    input_extra: Annotated[list[ExtraChunkBody], Meta(max_length=MAX_EXTRA)] | None = None
    """Chunks of other files, context put before the prefix."""
    prompt: Text | None = None
    """The start of the current line, continued by the model (written after the prefix)."""
    n_predict: Annotated[int, Meta(ge=-1, le=1_000_000)] | None = None
    """The most tokens to generate; -1 or absent: until the model ends (or the context
    does); 0: only compute the prompt (llama.vim warms the cache that way)."""
    t_max_predict_ms: Annotated[int, Meta(ge=0, le=86_400_000)] | None = None
    """Stop once this many ms have passed since the first token and a newline was written."""
    stream: bool | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    seed: int | None = None
    """-1 (llama-server's "random") or absent: a random seed."""
    stop: Annotated[list[Annotated[str, Meta(max_length=1000)]], Meta(max_length=64)] | None = None
    model: Annotated[str, Meta(max_length=300)] | None = None
    """A registry id; absent (llama.vim sends none): the loaded model."""
    response_fields: Annotated[list[str], Meta(max_length=64)] | None = None
    """Only these fields of the answer, each under its path as its key
    (``"timings/prompt_n"``), as llama-server does; llama.vim asks for them."""
    cache_prompt: bool | None = None
    samplers: list[Any] | None = None
    id_slot: Annotated[int, Meta(ge=-1, le=1_000_000)] | None = None
    """llama-server's slot choice; ours only reads it as a client tag (serving/supersede.py):
    requests with different ``id_slot`` do not supersede each other."""
    client_id: Annotated[str, Meta(max_length=200)] | None = None
    """A client tag (our own; the ``X-Client-Id`` header wins): requests with the same
    address, User-Agent, model and tag supersede each other (serving/supersede.py)."""


def pick_fields(answer: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
    """``answer`` reduced to ``paths`` (``a/b`` walks into objects), each found value under
    its path as written; the whole answer when ``paths`` is empty or absent."""
    if not paths:
        return answer
    picked: dict[str, Any] = {}
    for path in paths:
        value: Any = answer
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            picked[path] = value
    return picked
