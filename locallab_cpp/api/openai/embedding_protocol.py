"""POST /v1/embeddings' request and response bodies (OpenAI's shapes), as msgspec Structs.

``input`` is one of four shapes (a string, strings, token ids, lists of token ids), which
msgspec cannot tell apart in one union of lists: it is read as a string or a list, and
:func:`input_shape` sorts the list out. Unknown fields are ignored; null means the default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from locallab_cpp.errors import InvalidRequest

MAX_INPUTS = 2048
"""OpenAI's bound on the inputs of one request."""
MAX_INPUT_CHARS = 1_000_000
"""One input string at most (the body limit applies first at its default)."""
MAX_TOKEN_ID = 2**31 - 1

EmbeddingInput = (
    Annotated[str, Meta(max_length=MAX_INPUT_CHARS)]
    | Annotated[list[Any], Meta(min_length=1, max_length=MAX_INPUTS)]
)


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """OpenAI's embeddings request."""

    input: Annotated[
        EmbeddingInput,
        Meta(
            description="A string, a list of strings, a list of token ids, or a list of "
            f"lists of token ids; at most {MAX_INPUTS} inputs."
        ),
    ]
    model: (
        Annotated[
            str,
            Meta(
                max_length=200,
                description="An embedding model's id; any other name means the resident "
                "(or the registry's first) embedding model.",
            ),
        ]
        | None
    ) = None
    encoding_format: Literal["float", "base64"] | None = None
    """float (default): lists of numbers; base64: little-endian float32 bytes."""
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    """Only the model's own length is accepted (no Matryoshka truncation)."""
    user: Annotated[str, Meta(max_length=256)] | None = None


def input_shape(value: str | list[Any]) -> tuple[list[str], list[list[int]]]:
    """(texts, token lists) of ``input``: exactly one of the two is not empty."""
    if isinstance(value, str):
        return [value], []
    if all(isinstance(item, str) for item in value):
        for item in value:
            if len(item) > MAX_INPUT_CHARS:
                raise InvalidRequest(
                    f"Invalid request: 'input': each string is at most {MAX_INPUT_CHARS} "
                    "characters."
                )
        return list(value), []
    if all(_token(item) for item in value):
        return [], [list(value)]
    if all(isinstance(item, list) and all(_token(t) for t in item) for item in value):
        return [], [list(item) for item in value]
    raise InvalidRequest(
        "Invalid request: 'input': expected a string, a list of strings, a list of token "
        "ids or a list of lists of token ids (not a mix)."
    )


def _token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


class EmbeddingData(msgspec.Struct, kw_only=True):
    """One input's vector."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """Numbers, or base64 of little-endian float32 (encoding_format base64)."""


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    """Tokens read (embeddings generate none)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    """OpenAI's embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
