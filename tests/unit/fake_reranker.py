"""A fake rank-pooling engine for the unit tests: the EmbeddingEngine protocol without
llama.cpp. It tokenizes one id per word, lays a pair out as ``[CLS] query [SEP]
document`` and scores it by how many of the document's words are in the query, less a
little per word (made up, but an order a test can predict). ``RerankFactory`` opens it
for registry entries of kind "rerank" or "embedding" and a FakeEngine for the others."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fakes import FakeFactory

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, EngineStats
from locallab_cpp.errors import LocalLabError, PayloadTooLarge
from locallab_cpp.models.registry import ModelSpec

CLS, SEP = 1, 2


class FakeReranker:
    """The EmbeddingEngine protocol with rank pooling and a word-overlap score."""

    def __init__(self, spec: ModelSpec, n_ctx: int = 64) -> None:
        self.spec = spec
        self.failed = False
        self.closed = False
        self.embed_calls: list[list[list[int]]] = []
        self._vocab: dict[str, int] = {}
        self._words: dict[int, str] = {}
        self._lock = threading.Lock()
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=n_ctx,
            n_ctx_train=n_ctx,
            n_gpu_layers=0,
            parallel=1,
            size_bytes=spec.size_bytes,
            chat_format=None,
            loaded_at=time.time(),
            details={"architecture": "fake-bert"},
            max_token_bytes=32,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def pooling(self) -> str:
        return self.spec.pooling or "rank"

    @property
    def dimensions(self) -> int:
        return 1

    def stats(self) -> EngineStats:
        return EngineStats(
            active=0, queued=0, generated_tokens=0, prompt_tokens=0, cached_prompt_tokens=0
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        with self._lock:
            ids = [self._vocab.setdefault(word, len(self._vocab) + 10) for word in text.split()]
            for word, i in self._vocab.items():
                self._words[i] = word
        return [CLS, *ids] if add_bos else ids

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        # Tokenizing is llama.cpp work: never on the event loop's thread.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("rerank_tokens called on the event loop")
        return [
            CLS,
            *self.tokenize(query, add_bos=False),
            SEP,
            *self.tokenize(document, add_bos=False),
        ]

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        self.embed_calls.append([list(i) for i in inputs])
        out = []
        for tokens in inputs:
            if len(tokens) > self._info.n_ctx:
                raise PayloadTooLarge(f"an input of {len(tokens)} tokens")
            sep = list(tokens).index(SEP)
            query, doc = set(tokens[1:sep]), tokens[sep + 1 :]
            out.append([sum(t in query for t in doc) - 0.01 * len(doc), 0.5])
        await asyncio.sleep(0)
        return out

    def close(self, reason: LocalLabError | None = None) -> None:
        self.closed = True


class RerankFactory(FakeFactory):
    """FakeFactory that opens a FakeReranker for rerank and embedding entries."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rerankers: list[FakeReranker] = []

    def __call__(self, spec: ModelSpec, path: Path, settings: Settings) -> Any:
        if spec.kind == "chat":
            return super().__call__(spec, path, settings)
        engine = FakeReranker(spec)
        self.opened.append((spec.id, path))
        self.rerankers.append(engine)
        return engine
