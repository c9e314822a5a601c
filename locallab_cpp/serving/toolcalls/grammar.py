"""GBNF that forces a model to answer with tool calls in its family's markup.

The call objects come from one JSON schema, ``anyOf`` one object schema per tool
(``{"name": const, <arguments key>: <parameters>}``), converted by the project's converter
(:func:`locallab_cpp.engine.schema.grammar_for_json_schema`, with its limits): one
conversion, so the rules it names for the tools cannot clash. Its ``root`` rule is renamed
:data:`CALL_RULE`, and the family wraps that in its markers under a new ``root``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from locallab_cpp.engine.schema import grammar_for_json_schema
from locallab_cpp.engine.types import ToolSpec
from locallab_cpp.errors import InvalidRequest

CALL_RULE = "locallab-tool-call"
"""The rule that matches one call object (no converter rule is named like this: its rules
are "root", fixed primitives such as "space" and "char", and names starting "root-" or
"ref-")."""

_RULE_LINE = re.compile(r"^([A-Za-z0-9-]+)\s*::=\s*(.*)$")
# A rule body's tokens that are not rule references: string literals, character classes.
_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]')
_ROOT_REF = re.compile(r"(?<![A-Za-z0-9-])root(?![A-Za-z0-9-])")


def parameters_schema(tool: ToolSpec) -> Mapping[str, Any]:
    """The tool's arguments schema; absent or empty: any object."""
    parameters = tool["function"].get("parameters")
    return parameters if parameters else {"type": "object"}


def call_schema(tool: ToolSpec, arguments_key: str) -> dict[str, Any]:
    """The JSON schema of one call object of ``tool``, name first (so the name is known
    before the arguments stream)."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": tool["function"]["name"]},
            arguments_key: parameters_schema(tool),
        },
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


def chosen_tools(tools: Sequence[ToolSpec], name: str | None) -> list[ToolSpec]:
    """The tools a call may be for: the one named, or all; InvalidRequest if none."""
    if name is None:
        chosen = list(tools)
    else:
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequest(f"The tool '{name}' is not among the request's tools.")
    if not chosen:
        raise InvalidRequest("A tool call was required but no tools were given.")
    return chosen


def _rename_root(gbnf: str) -> str:
    """The converter's grammar with its ``root`` rule (and references to it) renamed."""

    def body(text: str) -> str:
        out, last = [], 0
        for literal in _LITERAL.finditer(text):
            out.append(_ROOT_REF.sub(CALL_RULE, text[last : literal.start()]))
            out.append(literal.group())
            last = literal.end()
        out.append(_ROOT_REF.sub(CALL_RULE, text[last:]))
        return "".join(out)

    lines = []
    for line in gbnf.splitlines():
        match = _RULE_LINE.match(line)
        if match is None:
            lines.append(line)
            continue
        rule = CALL_RULE if match.group(1) == "root" else match.group(1)
        lines.append(f"{rule} ::= {body(match.group(2))}")
    return "\n".join(lines)


def call_rules(tools: Sequence[ToolSpec], name: str | None, arguments_key: str) -> str:
    """GBNF rules whose :data:`CALL_RULE` matches one call object of the chosen tools."""
    schemas = [call_schema(t, arguments_key) for t in chosen_tools(tools, name)]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return _rename_root(grammar_for_json_schema(schema))


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
