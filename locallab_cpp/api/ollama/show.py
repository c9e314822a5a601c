"""POST /api/show's body: ``model_info`` from the GGUF header, ``capabilities``, and the
``template`` and ``parameters`` texts in the forms Ollama's clients read.

* ``model_info["<arch>.context_length"]`` is what one request can really use at the
  server's settings (the loaded engine's slot context, else what sizing.plan would give
  it), not the trained context: Copilot and Cline size their prompts from it.
* ``capabilities``: "completion" and "tools" always: tools reach every model, through
  its template where it lists them, else written into the system turn in the Hermes
  convention (engine/llama/chat_tools.py), and calls are read back the same way for all;
  Roo Code drops a model whose capabilities lack "tools";
  "insert" where the vocabulary has FIM prefix, suffix and middle tokens (the tokens
  serving/fim.py uses); "thinking" where the template writes ``<think>``. An embedding
  model (registry ``kind = "embedding"``) has ``["embedding"]`` only.
* ``template``: the GGUF's chat template (Jinja), or Ollama's default ``{{ .Prompt }}`` for
  a model without one. For a model with FIM tokens it is wrapped in a Go-template
  ``{{- if .Suffix }}...{{- else }}...{{- end }}`` that shows the FIM prompt /api/generate
  builds with ``suffix``: Continue turns fill-in-the-middle on only when the template
  mentions ``.Suffix``, as Ollama's own FIM models' templates do.
* ``parameters``: Ollama's Modelfile parameter lines, ``%-30s %#v`` in Go (the key padded
  to 30 columns, strings quoted): ``num_ctx`` and each ``stop`` string the server ends a
  chat turn on (the end-of-turn and end-of-sequence tokens' texts, the registry's stops).
"""

from __future__ import annotations

import json
from typing import Any

from locallab_cpp.api.ollama.model_protocol import ShowResponse
from locallab_cpp.api.ollama.tags import ModelView, details, rfc3339
from locallab_cpp.models.gguf_info import GGUFInfo

DEFAULT_TEMPLATE = "{{ .Prompt }}"
"""Ollama's template for a model that brings none."""
SHORT_ARRAY = 5
"""Without ``verbose``, Ollama sends longer metadata arrays as null."""
_OMITTED = ("tokenizer.chat_template",)  # sent as ``template``


def model_info(info: GGUFInfo, n_ctx: int, *, verbose: bool = False) -> dict[str, Any]:
    """The GGUF metadata as ``model_info``: scalars and strings, short arrays (null for
    long ones, like Ollama without ``verbose``), ``general.parameter_count`` always, and
    ``<arch>.context_length`` set to ``n_ctx``."""
    out: dict[str, Any] = {}
    for key, value in info.metadata.items():
        if key in _OMITTED or (value is None and key not in info.array_lengths):
            continue  # a string too long to keep
        if isinstance(value, list) and not verbose and len(value) > SHORT_ARRAY:
            value = None
        out[key] = value
    out["general.parameter_count"] = info.parameter_count
    arch = info.architecture
    if arch:
        out[f"{arch}.context_length"] = n_ctx
    return out


def capabilities(info: GGUFInfo, kind: str = "chat") -> list[str]:
    """Ollama's capability names for the model (see the module docstring); an embedding
    model (registry ``kind``) has "embedding" alone, as Ollama shows one."""
    if kind == "embedding":
        return ["embedding"]
    found = ["completion"]
    template = info.chat_template
    found.append("tools")  # every template: the engine writes what one cannot show
    if info.has_fim:
        found.append("insert")
    if template and "<think>" in template:
        found.append("thinking")
    return found


def template_text(info: GGUFInfo) -> str:
    """``template``: the chat template, with the FIM prompt around it where there is one."""
    template = info.chat_template or DEFAULT_TEMPLATE
    if info.has_fim and ".Suffix" not in template:
        fim = info.fim_tokens
        template = (
            f"{{{{- if .Suffix }}}}{fim['pre']}{{{{ .Prompt }}}}{fim['suf']}{{{{ .Suffix }}}}"
            f"{fim['mid']}{{{{- else }}}}{template}{{{{- end }}}}"
        )
    return template


def _go_value(value: Any) -> str:
    # %#v: Go syntax; a JSON string literal is one for the texts stops hold.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def parameters_text(n_ctx: int, stops: tuple[str, ...]) -> str:
    """Ollama's ``parameters`` lines: ``num_ctx`` and one ``stop`` line per string."""
    lines = [("num_ctx", n_ctx), *(("stop", s) for s in stops)]
    return "\n".join(f"{key:<30} {_go_value(value)}" for key, value in lines)


def stops_of(view: ModelView) -> tuple[str, ...]:
    """The texts a chat turn ends on: the GGUF's end-of-turn and EOS, the registry's."""
    found = list(view.info.stop_texts) if view.info is not None else []
    for stop in view.spec.stop:
        if stop not in found:
            found.append(stop)
    return tuple(found)


def show_response(
    view: ModelView, info: GGUFInfo, n_ctx: int, name: str, *, verbose: bool = False
) -> ShowResponse:
    """The /api/show body of ``view`` (whose header is ``info``), served as ``name``."""
    template = template_text(info)
    parameters = parameters_text(n_ctx, stops_of(view))
    modelfile = (
        f'# Modelfile of {name}, served by locallab_cpp\nFROM {view.path.name}\nTEMPLATE """'
        f'{template}"""\n' + "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
    )
    license_text = info.metadata.get("general.license")
    return ShowResponse(
        modelfile=modelfile,
        parameters=parameters,
        template=template,
        details=details(view),
        model_info=model_info(info, n_ctx, verbose=verbose),
        capabilities=capabilities(info, view.spec.kind),
        modified_at=rfc3339(view.modified),
        license=license_text if isinstance(license_text, str) else "",
    )
