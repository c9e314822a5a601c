"""POST /v1/embeddings: OpenAI's embeddings over serving/embeddings.py.

Vectors are L2-normalized (OpenAI's are unit length, and clients compare them with a dot
product); ``encoding_format: base64`` packs each as little-endian float32, which is what
the openai client asks for by default and decodes. An input longer than the model's
context is a 400 (``context_length_exceeded``), as OpenAI answers, never cut silently.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from locallab_cpp.api.openai.embedding_protocol import (
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    input_shape,
)
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.http.disconnect import unless_disconnected
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.serving import embeddings as serving

_DOC = (
    "OpenAI's embeddings: `input` a string, strings, token ids or lists of token ids (at "
    "most 2048 inputs); unit-length vectors as numbers or, with `encoding_format: base64`, "
    "little-endian float32. `dimensions` other than the model's own length is refused. "
    "`model` names an embedding model (a chat model is a 400); other names mean the "
    "resident embedding model."
)


def encode_base64(vector: list[float]) -> str:
    """``vector`` as base64 of little-endian float32, as OpenAI sends it."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class EmbeddingsController(Controller):
    """POST /v1/embeddings."""

    tags = ["OpenAI"]

    @post("/embeddings", status_code=200, summary="Embeddings (OpenAI)", description=_DOC)
    async def embeddings(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmbeddingRequest],
        models: NamedDependency[ModelManager],
    ) -> EmbeddingList:
        """One unit-length vector per input, in input order."""
        texts, token_lists = input_shape(data.input)  # every 400 of the body first
        model_id, engine = await serving.embedder_for(models, data.model)
        if data.dimensions is not None and data.dimensions != engine.dimensions:
            raise InvalidRequest(
                f"Invalid request: 'dimensions': model '{model_id}' gives vectors of "
                f"{engine.dimensions} dimensions and cannot shorten them; leave dimensions "
                "out."
            )
        if texts:
            inputs = await serving.tokenize_inputs(engine, texts, truncate=False)
        else:
            inputs = serving.check_token_inputs(engine, token_lists, truncate=False)
        done = await unless_disconnected(request, serving.embed_tokens(engine, inputs))
        as_base64 = data.encoding_format == "base64"
        items = []
        for index, raw in enumerate(done.vectors):
            vector = serving.normalized(raw)
            items.append(
                EmbeddingData(index=index, embedding=encode_base64(vector) if as_base64 else vector)
            )
        usage = EmbeddingUsage(prompt_tokens=done.prompt_tokens, total_tokens=done.prompt_tokens)
        return EmbeddingList(data=items, model=model_id, usage=usage)
