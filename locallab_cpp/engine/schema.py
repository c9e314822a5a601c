"""Structured output for the serving layer: a JSON schema as a grammar for
:attr:`locallab_cpp.engine.types.GenerationInput.grammar`.

The one entry point for every route a schema takes (``response_format``, a forced tool
call's ``parameters``, any API that accepts one later). The converter
(:mod:`locallab_cpp.engine.json_grammar`) is pure Python; llama_cpp is imported only by
:func:`checked_grammar`, when it is called, so the HTTP layer can import this module.
Both can take a while for a large schema (a tenth of a second for 10,000 properties):
call them in a worker thread (``asyncio.to_thread``), not on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from locallab_cpp.engine.json_grammar import convert_schema
from locallab_cpp.errors import InvalidRequest


def grammar_for_json_schema(schema: Mapping[str, Any] | bool | str) -> str:
    """GBNF text whose matches are the JSON documents valid under ``schema`` (a JSON
    Schema as an object, or its JSON text), as far as docs/api.md ("Structured output")
    says: the bounds it enforces are written into the grammar.

    Raises :class:`locallab_cpp.errors.InvalidRequest` for a schema that is not JSON, uses
    what the converter does not support, or exceeds one of its limits (the message names
    the field, such as ``properties.a.minLength``, and the limit).
    """
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except RecursionError:
            raise InvalidRequest("The JSON schema is nested too deeply.") from None
        except ValueError as exc:
            raise InvalidRequest(f"The JSON schema is not valid JSON: {exc}.") from None
    if not isinstance(schema, Mapping | bool):
        raise InvalidRequest("A JSON schema must be an object (or true/false).")
    return convert_schema(schema)


def checked_grammar(grammar: str) -> str:
    """``grammar``, once llama.cpp's parser has accepted it (InvalidRequest if not).

    The engine checks every grammar again when it is submitted, on the event loop; a
    grammar checked here first (in a worker thread) is then only looked up.
    """
    from locallab_cpp.engine.llama.grammar import check_grammar

    check_grammar(None, grammar)
    return grammar


JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}
"""The schema of OpenAI's ``response_format: {"type": "json_object"}``: any JSON object."""
