"""The tool-call formats of the model families we serve.

* ``hermes`` (Qwen 2.5, Qwen 3, Hermes, and our text fallback for templates that know no
  tools): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, repeated for
  several calls.
* ``llama3`` (Llama 3.1/3.2/3.3): the JSON object ``{"name": ..., "parameters": {...}}``
  as the whole answer, possibly after ``<|python_tag|>``; several separated by ``;``.
* ``mistral`` (Mistral 7B v0.3, Nemo): ``[TOOL_CALLS][{"name": ..., "arguments": {...},
  "id": "..."}, ...]``, and the newer ``[TOOL_CALLS]name[ARGS]{...}`` (Small 3.2, Devstral).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from locallab_cpp.engine.types import ToolSpec
from locallab_cpp.serving.toolcalls.calls import ParsedToolCall, ToolCallDelta, new_call_id
from locallab_cpp.serving.toolcalls.grammar import CALL_RULE, call_rules, gbnf_literal
from locallab_cpp.serving.toolcalls.streamer import CallRecord, FormatSpec, ToolCallStreamer

__all__ = ["ToolCallDelta", "ToolCallFormat", "ToolCallStreamer"]


class ToolCallFormat:
    """How one model family writes tool calls: reading them out of generated text
    (whole or streamed) and a grammar that makes the model write them."""

    name: str = ""
    spec: FormatSpec = FormatSpec(openers=())
    markers: tuple[str, ...] = ()
    """Marker texts that may be control tokens of the model's vocabulary: the engine keeps
    them in the text (GenerationInput.keep_special) so that the parser sees them."""
    arguments_key = "arguments"
    """The key a call object holds its arguments under, in :meth:`grammar`."""

    def streamer(self) -> ToolCallStreamer:
        """A reader for one streamed generation."""
        return ToolCallStreamer(self.spec)

    def parse(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        """(the text without its calls, the calls) of a whole generation; never raises.

        Reads exactly as :meth:`streamer` does, so streamed and whole answers agree. The
        one difference: a call whose arguments never finish (cut by the token limit), or
        are not a JSON object, is content here, while a streamer has already announced it.
        """
        reader = self.streamer()
        reader.feed(text)
        reader.finish()
        content: list[str] = []
        calls: list[ParsedToolCall] = []
        for segment in reader.segments:
            if not isinstance(segment, CallRecord):
                content.append(segment)
            elif segment.valid():
                calls.append(ParsedToolCall(segment.id, segment.name, segment.arguments))
            else:
                content.append(reader.raw(segment))
        return "".join(content), calls

    def grammar(self, tools: Sequence[ToolSpec], name: str | None, parallel: bool) -> str:
        """GBNF (root rule ``root``) matching one call, or several when ``parallel``, of
        the tool ``name`` (None: any of ``tools``), arguments valid under its schema.
        InvalidRequest for an unknown name or a schema the converter cannot take."""
        rules = call_rules(tools, name, self.arguments_key)
        return f"root ::= {self._wrap(parallel)}\n{rules}\n"

    def _wrap(self, parallel: bool) -> str:
        """The root rule's body around :data:`CALL_RULE`."""
        raise NotImplementedError


_OPEN = gbnf_literal("<tool_call>\n")
_CLOSE = gbnf_literal("\n</tool_call>")


class HermesFormat(ToolCallFormat):
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``."""

    name = "hermes"
    spec = FormatSpec(openers=("<tool_call>",), closer="</tool_call>")
    markers = ("<tool_call>", "</tool_call>")

    def _wrap(self, parallel: bool) -> str:
        block = f"{_OPEN} {CALL_RULE} {_CLOSE}"
        return f'{block} ("\\n" {block})*' if parallel else block


class Llama3Format(ToolCallFormat):
    """``{"name": ..., "parameters": {...}}``, possibly after ``<|python_tag|>``."""

    name = "llama3"
    spec = FormatSpec(openers=("<|python_tag|>",), bare_start="{", separators=";")
    markers = ("<|python_tag|>",)
    arguments_key = "parameters"

    def _wrap(self, parallel: bool) -> str:
        return f'{CALL_RULE} (";" " "? {CALL_RULE})*' if parallel else CALL_RULE


class MistralFormat(ToolCallFormat):
    """``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` or
    ``[TOOL_CALLS]name[ARGS]{...}``.

    ``[TOOL_CALLS]`` is a control token: the engine keeps it in the text when asked
    (:attr:`markers`), and an array of call objects that opens the output is read as calls
    too. Call ids are 9 letters and
    digits: Mistral's templates reject any other id when the calls are sent back.
    """

    name = "mistral"
    spec = FormatSpec(
        openers=("[TOOL_CALLS]",), bare_start="[", mistral=True, new_id=partial(new_call_id, 9)
    )
    markers = ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")

    def _wrap(self, parallel: bool) -> str:
        calls = f'{CALL_RULE} ("," " "? {CALL_RULE})*' if parallel else CALL_RULE
        return f'{gbnf_literal("[TOOL_CALLS]")} "[" {calls} "]"'


FORMATS: dict[str, ToolCallFormat] = {
    f.name: f for f in (HermesFormat(), Llama3Format(), MistralFormat())
}


def tool_format_for(name: str | None) -> ToolCallFormat:
    """The format named ``name`` (a ``ChatPrompt.tool_format``); unknown or None: hermes,
    the format our text fallback teaches a model whose template knows no tools."""
    return FORMATS.get(name or "", FORMATS["hermes"])
