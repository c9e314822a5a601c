"""What parsing generated text for tool calls yields: whole calls and streamed deltas."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    """One tool call found in generated text."""

    id: str
    """``call_<random>`` (Mistral: 9 letters and digits, what its template demands back)."""
    name: str
    arguments: str
    """The arguments object as compact JSON text: the model's JSON with the whitespace
    outside strings removed (arguments written as a JSON string are decoded and
    re-serialized). It always parses to a JSON object."""


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call while streaming.

    A call's first delta carries its ``id`` and ``name`` (``arguments`` ""); later ones
    carry argument fragments only (id and name None). The fragments of a call join to
    exactly the ``arguments`` that :meth:`ToolCallFormat.parse` reports for it.
    """

    index: int
    """The call's position among the calls of this generation, from 0."""
    id: str | None
    name: str | None
    arguments: str


def new_call_id(length: int = 0) -> str:
    """A fresh call id: ``call_`` and 24 random letters and digits, or exactly ``length``
    random letters and digits when given (Mistral's templates want 9)."""
    if length:
        return "".join(secrets.choice(_ALNUM) for _ in range(length))
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))
