"""POST /infill: fill-in-the-middle for editors (llama.vim, llama.vscode), llama-server's shape.

Whole (the default): one JSON object with ``content``, ``stop: true``, the token counts,
``truncated``, ``stop_type`` and ``timings``. With ``stream: true``: SSE events
``data: {"content": "...", "stop": false}``, then one ``data:`` with ``stop: true`` and
the figures (no ``[DONE]``, as llama-server). ``response_fields`` picks fields of the
answer (of the last event when streamed). Errors are llama-server's body (errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api import Api
from locallab_cpp.api.infill import run as infill
from locallab_cpp.api.infill.errors import INFILL_ERRORS, error_object
from locallab_cpp.api.infill.protocol import InfillRequest, pick_fields
from locallab_cpp.errors import LocalLabError
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.http.errors import Problem
from locallab_cpp.http.sse import EventStream, event_stream
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving.supersede import Running, client_key, registry_of

_encoder = msgspec.json.Encoder()

_DOC = (
    "Fill-in-the-middle in llama-server's /infill shape (llama.vim, llama.vscode): "
    "`input_prefix`, `input_suffix`, `input_extra` ([{filename, text}] of other files), "
    "`prompt` (the start of the current line), `n_predict`, `t_max_predict_ms`, sampling "
    "fields. Needs a model with FIM tokens (e.g. Qwen2.5-Coder); a prompt longer than the "
    "context is trimmed (extra chunks first), and `truncated` says so."
)


def _data(payload: object) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


async def _collect(source: AsyncIterator[str | dict[str, Any]]) -> dict[str, Any]:
    parts: list[str] = []
    async for item in source:
        if isinstance(item, str):
            parts.append(item)
        else:
            return {**item, "content": "".join(parts)}
    raise AssertionError("the generation ended without its final fields")


async def _events(
    source: AsyncGenerator[str | dict[str, Any], None], fields: list[str] | None
) -> AsyncIterator[bytes]:
    try:
        async with aclosing(source):
            async for item in source:
                if isinstance(item, str):
                    yield _data({"index": 0, "content": item, "stop": False})
                else:
                    yield _data(pick_fields(item, fields))
    except LocalLabError as exc:
        problem = Problem.from_error(exc)
        yield _data({"error": error_object(problem, INFILL_ERRORS.status(problem.kind))})


def _enter(request: Request[Any, Any, Any], data: InfillRequest, model_id: str) -> Running | None:
    """Register the request in the supersede registry, cancelling the same client's
    previous one (serving/supersede.py); None for a cache warm-up (``n_predict: 0``)."""
    if data.n_predict == 0:
        return None
    key = client_key(
        path="/infill",
        model=model_id,
        host=request.client.host if request.client else None,
        headers=request.headers,
        tag=data.client_id if data.client_id is not None else _slot_tag(data.id_slot),
    )
    return registry_of(request.app.state).enter(key)


def _slot_tag(id_slot: int | None) -> int | None:
    """llama-server's ``id_slot`` as a tag; -1 is its "any slot", so no tag."""
    return id_slot if id_slot is not None and id_slot >= 0 else None


class InfillController(Controller):
    """POST /infill."""

    tags = ["Infill"]

    @post("/", status_code=200, summary="Fill in the middle (llama-server)", description=_DOC)
    async def infill(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[InfillRequest],
        models: NamedDependency[ModelManager],
    ) -> dict[str, Any] | EventStream:
        """Complete between ``input_prefix`` + ``prompt`` and ``input_suffix``."""
        engine = await models.engine_for(models.resolve(data.model))
        running = _enter(request, data, engine.info.model_id)
        try:
            prepared = await infill.start(engine, data, running)
        except BaseException:
            if running is not None:
                running.finish()
            raise
        source = infill.run(engine, prepared, data.t_max_predict_ms)  # it finishes ``running``
        if data.stream:
            return event_stream(_events(source, data.response_fields))
        answer = await unless_disconnected(request, _collect(source))
        return pick_fields(answer, data.response_fields)


INFILL_API = Api(
    name="infill",
    prefix="/infill",
    routes=(InfillController,),
    errors=INFILL_ERRORS,
)
"""POST /infill, with llama-server's error bodies."""
