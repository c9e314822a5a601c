"""Chat prompts: the GGUF's own chat template, else a llama-cpp-python chat format by name.

Tools, tool calls and tool results reach a template as far as it shows them; the rest is
written into text turns (chat_tools.py). Client text that holds a control token's text is
marked so it is tokenized as plain text (chat_segments.py).

Templates render in llama-cpp-python's ImmutableSandboxedEnvironment: a template that
reaches for Python internals (``''.__class__``, ``cycler.__init__.__globals__``) gets
undefined values or a SecurityError, never the objects; a template error, its own
``raise_exception`` included, is the client's InvalidRequest (400).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llama_cpp import llama_chat_format

from locallab_cpp.engine.llama import chat_segments, chat_tools
from locallab_cpp.engine.types import ChatMessage, ChatPrompt, ToolSpec
from locallab_cpp.errors import ConfigError, InvalidRequest

logger = logging.getLogger("locallab_cpp.engine")

FALLBACK_FORMAT = "chatml"
# Formats whose llama-cpp-python formatter drops system messages; the models' own templates
# fold the system text into the first user turn, so we do that before formatting.
_FOLD_SYSTEM_FORMATS = frozenset({"gemma"})


def _named_formatter(name: str) -> Callable[..., Any]:
    wanted = name.replace("-", "").replace("_", "").lower()
    for attr, value in vars(llama_chat_format).items():
        short = attr.removeprefix("format_")
        if short != attr and callable(value) and short.replace("_", "").lower() == wanted:
            return value
    raise ConfigError(
        f"Unknown chat format '{name}'. Use one of llama-cpp-python's chat format names "
        "(gemma, chatml, llama-2, llama-3, mistral-instruct, zephyr, ...)."
    )


def _fold_system(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _compiled(template: str | None, *, eos_text: str, bos_text: str, opened: bool = True) -> Any:
    """The GGUF template as a sandboxed Jinja formatter (``opened``: ending with the
    assistant's turn opened); None when there is none or it does not compile (logged; the
    named format is used instead, as llama.cpp falls back)."""
    if not template:
        return None
    try:
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=eos_text,
            bos_token=bos_text,
            add_generation_prompt=opened,
        )
    except Exception as exc:  # a Jinja syntax error in the model file
        logger.warning("the model's chat template does not compile (%s); ignoring it", exc)
        return None


def _tail(text: str, base: str) -> str:
    """What ``text`` adds after the longest start it shares with ``base``."""
    n = min(len(text), len(base))
    k = 0
    while k < n and text[k] == base[k]:
        k += 1
    return text[k:]


_PROBE = [{"role": "user", "content": "x"}]


class ChatTemplate:
    """Renders messages with the model's template (GGUF first, then the registry's name)."""

    def __init__(
        self,
        *,
        gguf_template: str | None,
        chat_format: str | None,
        bos_text: str,
        eos_text: str,
        control_texts: Iterable[str] = (),
        eog_texts: Iterable[str] = (),
        extra_stops: Iterable[str] = (),
    ) -> None:
        self._bos_text = bos_text
        self._eog_texts = frozenset(eog_texts)
        self._extra_stops = tuple(extra_stops)
        """The registry's stop texts for this model (ModelSpec.stop)."""
        """Texts of end-of-generation tokens: caught as tokens, never as stop strings."""
        self._closed: Any = None
        """The GGUF template without the assistant's turn opened (the generation prompt
        is the difference)."""
        self._opening = ""
        """The generation prompt of a one-message conversation: where a rendering ends with
        it, it is that rendering's too, and no second rendering is needed."""
        self._control = chat_segments.ControlTexts(control_texts)
        """The vocabulary's control-token texts, kept out of what the client wrote."""
        self._fold = False
        self.caps = chat_tools.PLAIN
        """What the template shows of tools (a named format: nothing)."""
        self.tool_format = "hermes"
        """The tool-call format the model answers in (chat_tools.tool_format)."""
        formatter = _compiled(gguf_template, eos_text=eos_text, bos_text=bos_text)
        if formatter is not None:
            self.name = "gguf"
            self._format: Callable[..., Any] = formatter
            self.caps = chat_tools.probe(
                lambda messages, tools: str(self._format(messages=messages, tools=tools).prompt)
            )
            self.tool_format = chat_tools.tool_format(gguf_template, self.caps)
            self._closed = _compiled(
                gguf_template, eos_text=eos_text, bos_text=bos_text, opened=False
            )
            self._opening = self._generation_prompt(_PROBE, None, None)
        else:
            name = chat_format or FALLBACK_FORMAT
            if chat_format is None:
                logger.warning("model has no chat template and none is named; using %s", name)
            self._format = _named_formatter(name)
            self._fold = name in _FOLD_SYSTEM_FORMATS
            self.name = name

    def render(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        tools: Sequence[ToolSpec] | None = None,
    ) -> ChatPrompt:
        """Render ``messages``, and the ``tools`` the model may call, ending with the
        assistant's turn opened; InvalidRequest if the template rejects them."""
        prepared, template_tools = chat_tools.prepare(messages, tools, self.caps)
        if self._fold:
            prepared = _fold_system(prepared)
        result = self._call(prepared, template_tools)
        stop = result.stop
        stops: tuple[str, ...]
        if stop is None:
            stops = ()
        elif isinstance(stop, str):
            stops = (stop,)
        else:
            stops = tuple(stop)
        # llama-cpp-python's formatter lists the EOS token's text ("</s>"); the decode loop
        # ends on the token itself, and the text may be a legitimate part of an answer.
        stops = tuple(s for s in stops if s and s not in self._eog_texts) + self._extra_stops
        text: str = result.prompt
        segments = chat_segments.segments(
            text,
            prepared,
            template_tools,
            self._control,
            lambda m, t: str(self._call(m, t).prompt),
        )
        return ChatPrompt(
            text=text,
            stop=stops,
            has_bos_text=bool(self._bos_text) and text.startswith(self._bos_text),
            tool_format=self.tool_format,
            segments=segments,
            generation_prompt=self._generation_prompt(prepared, template_tools, text),
        )

    def _generation_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, text: str | None
    ) -> str:
        """The template's own text after the last message (``text``: the rendering with the
        turn opened, if already made). Only this decides whether the answer starts inside
        reasoning: a message holding ``<think>`` must not. A named format adds nothing."""
        if self._closed is None:
            return ""
        try:
            if text is None:
                text = str(self._format(messages=messages, tools=tools).prompt)
            if self._opening and text.endswith(self._opening):
                return self._opening
            base = str(self._closed(messages=messages, tools=tools).prompt)
        except Exception:  # the template refuses this conversation: render() says so
            return ""
        return _tail(text, base)

    def _call(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Any:
        """The formatter's result; InvalidRequest for any failure of the template."""
        try:
            return self._format(messages=messages, tools=tools)
        except Exception as exc:  # the template's raise_exception, a Jinja or sandbox error
            raise InvalidRequest(
                f"The model's chat template cannot render this conversation: {exc}"[:500]
            ) from None
