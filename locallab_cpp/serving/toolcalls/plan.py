"""What a request's tools and tool choice ask of the generation, whatever API sent them.

The model sees the tools through its own chat template; its calls are read in its family's
format (formats.py). A call only reaches the client with arguments that parse as JSON and
match the function's schema: ``required`` and a named function get a grammar that allows
nothing else, and every call is validated when its text ends (serving/answer.py: an
invalid or cut-off call stays text). Each tool's parameters are checked when the request
arrives (:func:`check_parameters`), before a grammar converter or the argument check meet
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from locallab_cpp.engine.types import ToolSpec
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.serving.toolcalls.formats import ToolCallFormat
from locallab_cpp.serving.toolcalls.validate import schema_problem, validate_arguments

ToolMode = Literal["off", "auto", "required", "named"]
ANY_OBJECT: Mapping[str, Any] = {"type": "object"}
"""The parameters of a tool that declares none: any arguments object."""


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A function the client offers the model."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    """JSON Schema of the arguments object; None: any object."""
    where: str = "tools"
    """Where the client wrote ``parameters`` ("tools[0].function.parameters"), for 400s."""


@dataclass(frozen=True, slots=True)
class NamedTool:
    """A tool choice that names the one function the model must call."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedTool
"""none: no tools offered; auto: the model may call; required: it must call one."""


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What a request's tools mean for its generation."""

    mode: ToolMode
    tools: list[ToolSpec] | None = None
    """Handed to the chat template; None when the model is offered no tools."""
    name: str | None = None
    """The function a named tool choice names."""
    parallel: bool = True
    schemas: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each function's parameters schema, for validating calls."""

    @property
    def active(self) -> bool:
        """Whether the output is read for tool calls."""
        return self.mode != "off"

    @property
    def forced(self) -> bool:
        """Whether a grammar makes the model call a tool."""
        return self.mode in ("required", "named")

    def grammar(self, fmt: ToolCallFormat) -> str | None:
        """The GBNF forcing a call, for ``required`` and a named function."""
        if not self.forced or self.tools is None:
            return None
        return fmt.grammar(self.tools, self.name, self.parallel)

    def invalid(self, name: str, arguments: str) -> str | None:
        """Why a call may not go to the client (unknown function, arguments that do not
        parse or match the schema), or None when it may."""
        schema = self.schemas.get(name)
        if schema is None:
            return f"no function named {name!r} was offered"
        if self.mode == "named" and name != self.name:
            return f"the tool choice names {self.name!r}"
        return validate_arguments(arguments, schema)


OFF = ToolPlan(mode="off")


def check_parameters(tools: Sequence[ToolDef]) -> None:
    """400 for a tool whose parameters are no usable JSON Schema."""
    for tool in tools:
        if tool.parameters is None:
            continue
        problem = schema_problem(tool.parameters, tool.where)
        if problem is not None:
            raise InvalidRequest(
                f"Invalid request: 'tools': {problem} (function {tool.name[:64]!r})."
            )


def plan_tools(
    tools: Sequence[ToolDef], choice: ToolChoice | None = None, *, parallel: bool = True
) -> ToolPlan:
    """The tool plan of a request (``choice`` None means auto); 400 for a choice that
    cannot be met or a tool schema that is unusable."""
    choice = choice or "auto"
    check_parameters(tools)
    if choice == "none" or (not tools and choice == "auto"):
        return OFF
    if not tools:
        raise InvalidRequest(
            "Invalid request: 'tool_choice': it asks for a tool call, but 'tools' is empty."
        )
    specs: list[ToolSpec] = []
    schemas: dict[str, Mapping[str, Any]] = {}
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.parameters if tool.parameters is not None else ANY_OBJECT
        specs.append({"type": "function", "function": function})  # type: ignore[typeddict-item]
        schemas[tool.name] = function["parameters"]
    if isinstance(choice, NamedTool):
        if choice.name not in schemas:
            raise InvalidRequest(
                "Invalid request: 'tool_choice': no function named "
                f"{choice.name[:64]!r} is in 'tools'."
            )
        return ToolPlan("named", specs, choice.name, parallel=False, schemas=schemas)
    mode: ToolMode = "required" if choice == "required" else "auto"
    return ToolPlan(mode, specs, None, parallel=parallel, schemas=schemas)
