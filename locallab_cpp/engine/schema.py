"""Structured output for the serving layer: a JSON schema as a grammar for
:attr:`locallab_cpp.engine.types.GenerationInput.grammar`.

The HTTP layer imports this module, never llama_cpp: the converter is imported only when
a schema is converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def grammar_for_json_schema(schema: Mapping[str, Any] | bool | str) -> str:
    """GBNF text whose matches are the JSON documents valid under ``schema`` (a JSON
    Schema as an object, or its JSON text).

    Give string properties a ``maxLength`` (and arrays a ``maxItems``) where the output must
    stay short: the grammar bounds what the schema bounds. Raises
    :class:`locallab_cpp.errors.InvalidRequest` for a schema that is not JSON or that the
    converter does not support.
    """
    from locallab_cpp.engine.llama.grammar import json_schema_to_grammar

    return json_schema_to_grammar(schema)


JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}
"""The schema of OpenAI's ``response_format: {"type": "json_object"}``: any JSON object."""
