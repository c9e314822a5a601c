"""A fake embedding engine for the unit tests: the EmbeddingEngine protocol without
llama.cpp, and a factory that opens it for registry entries of kind "embedding".

``tokenize`` maps each word to an id (BOS 1 first and SEP 2 last when ``add_bos``, as a
BERT vocabulary adds [CLS] and [SEP]); a vector is :func:`fake_vector` of the token list,
so tests can compute what the API must answer.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from fakes import FakeEngine, FakeFactory

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, EngineStats
from locallab_cpp.errors import InvalidRequest, LocalLabError, PayloadTooLarge
from locallab_cpp.models.registry import ModelSpec

BOS, SEP = 1, 2
DIMENSIONS = 8
N_CTX = 16


def word_id(word: str) -> int:
    """The fake vocabulary's id of ``word`` (never BOS or SEP)."""
    return 10 + zlib.crc32(word.encode()) % 1000


def fake_vector(tokens: Sequence[int]) -> list[float]:
    """The fake model's pooled vector of ``tokens``: not unit length, never all zero."""
    return [float(sum((t * (i + 3)) % 17 for t in tokens) + i + 1) for i in range(DIMENSIONS)]


class FakeEmbeddingEngine:
    """An embedding model of N_CTX tokens and DIMENSIONS numbers a vector."""

    def __init__(self, spec: ModelSpec, path: Path, settings: Settings) -> None:
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=N_CTX,
            n_ctx_train=N_CTX,
            n_gpu_layers=0,
            parallel=64,
            size_bytes=spec.size_bytes,
            chat_format=None,
            loaded_at=time.time(),
            details={"kind": spec.kind, "pooling": "mean", "n_embd": DIMENSIONS},
            max_token_bytes=64,
        )
        self.calls: list[list[list[int]]] = []
        """The token lists of each embed call."""
        self.closed = False
        self.prompt_tokens = 0

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def failed(self) -> bool:
        return False

    @property
    def pooling(self) -> str:
        return "mean"

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    def stats(self) -> EngineStats:
        return EngineStats(
            active=0,
            queued=0,
            generated_tokens=0,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=0,
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        words = [word_id(w) for w in text.split()]
        return [BOS, *words, SEP] if add_bos else words

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        return [*self.tokenize(query), *self.tokenize(document, add_bos=False), SEP]

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        if not inputs or any(not t for t in inputs):
            raise InvalidRequest("empty input")
        if any(len(t) > N_CTX for t in inputs):
            raise PayloadTooLarge("too long")
        self.calls.append([list(t) for t in inputs])
        self.prompt_tokens += sum(len(t) for t in inputs)
        await asyncio.sleep(0)
        return [fake_vector(t) for t in inputs]

    def close(self, reason: LocalLabError | None = None) -> None:
        self.closed = True


class KindFactory(FakeFactory):
    """FakeFactory that opens a FakeEmbeddingEngine for a registry entry of kind
    "embedding" (as LlamaEngineFactory dispatches on the kind)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.embedders: list[FakeEmbeddingEngine] = []

    def __call__(self, spec: ModelSpec, path: Path, settings: Settings) -> FakeEngine:
        if spec.kind == "embedding":
            engine = FakeEmbeddingEngine(spec, path, settings)
            self.opened.append((spec.id, path))
            self.embedders.append(engine)
            return engine  # type: ignore[return-value]  # the manager holds either kind
        return super().__call__(spec, path, settings)
