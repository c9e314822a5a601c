"""The embedding engine's thread: shared decode batches over one llama.cpp context.

Requests queue their inputs here (:meth:`EmbedLoop.queue`, from the event loop); the
thread takes as many waiting inputs as one batch holds (up to ``n_seq_max`` sequences and
:data:`PACK_TOKENS` tokens, or one longer input, whichever request they came from), gives
each a sequence id of its own, decodes them in one ``llama_decode``, reads each sequence's
pooled vector, clears the cache and resolves the requests whose last input that was. Only
this thread touches the context. A whole input always goes into one batch: llama.cpp
pools a sequence only when it sees all of it in one ubatch (non-causal models cannot be
decoded piecewise at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp

from locallab_cpp.errors import EngineFailure, GenerationAborted, LocalLabError

logger = logging.getLogger("locallab_cpp.engine")

POOLING_NONE = "none"

PACK_TOKENS = 512
"""Tokens of several inputs packed into one decode, at most (a longer input goes alone).
Every sequence shares the one KV cache, and attention is computed over all the cells a
decode fills, masked per sequence: packing many inputs together makes each token's
attention cost grow with the whole pack, while the weights' matrix products gain little
past a few hundred rows. docs/benchmarks.md has the measurement."""


@dataclass(eq=False)
class EmbedRequest:
    """One ``embed`` call: its inputs, the vectors found so far and the future to resolve."""

    inputs: Sequence[Sequence[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    results: list[list[float] | None] = field(default_factory=list)
    remaining: int = 0
    abandoned: bool = False
    """The caller stopped waiting (its future was cancelled): its other inputs are skipped."""

    def __post_init__(self) -> None:
        self.results = [None] * len(self.inputs)
        self.remaining = len(self.inputs)


@dataclass(frozen=True, slots=True)
class _Item:
    request: EmbedRequest
    index: int


class EmbedLoop:
    """The queue of waiting inputs and the thread that decodes them."""

    def __init__(
        self,
        ctx: object,
        *,
        n_batch: int,
        n_seq_max: int,
        dimensions: int,
        pooling: str,
        name: str,
    ) -> None:
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        """None for models without a KV cache (BERT-like encoders): nothing to clear."""
        self._n_batch = n_batch
        self._n_seq_max = n_seq_max
        self._dimensions = dimensions
        self._pooling = pooling
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._pending: deque[_Item] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.failed = False
        """The thread died of an unexpected exception: the engine must be reopened."""
        self._stop_requested = False
        self._reason: LocalLabError = GenerationAborted()
        self.active = 0
        self.embedded_inputs = 0
        self.prompt_tokens = 0
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name=f"llama-embed[{name}]", daemon=True)
        self._thread.start()

    def queued(self) -> int:
        """Inputs waiting for a batch (call with ``cond`` held)."""
        return len(self._pending)

    def queue(self, request: EmbedRequest) -> None:
        """Queue every input of ``request`` (event loop); raises GenerationAborted once the
        engine stops or failed."""
        with self.cond:
            if self.failed:
                raise GenerationAborted(
                    "The model's engine failed; retry: the next request reopens it.",
                    retry_after=1,
                )
            if self.stopping:
                raise GenerationAborted("The model is being unloaded; retry shortly.")
            self._pending.extend(_Item(request, i) for i in range(len(request.inputs)))
            self.cond.notify()

    def stop(self, reason: LocalLabError) -> bool:
        """End waiting requests with ``reason``, join the thread and free the batch; False
        if it was already called."""
        with self.cond:
            if self._stop_requested:
                return False
            self._stop_requested = True
            self.stopping = True
            self._reason = reason
            self.cond.notify_all()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        return True

    # ----- the engine thread -------------------------------------------------------------

    def _run(self) -> None:
        items: list[_Item] = []
        try:
            while True:
                with self.cond:
                    while not self._pending and not self._stop_requested:
                        self.cond.wait()
                    if self._stop_requested:
                        break
                    items = self._take()
                    self.active = len(items)
                if items:
                    self._decode(items)
                with self.cond:
                    items = []
                    self.active = 0
        except Exception:
            logger.exception("the embedding thread failed")
            with self.cond:
                self.failed = True
                self.stopping = True
                self._reason = EngineFailure("The embedding engine failed; see the server log.")
        with self.cond:
            left = [*items, *self._pending]  # the batch it failed in, if any, and the queue
            self._pending.clear()
            reason = self._reason
        for item in left:
            self._fail(item.request, reason)

    def _take(self) -> list[_Item]:
        """The next batch's inputs, in queue order (``cond`` held): a request's inputs that
        do not fit stay at the head for the next batch."""
        items: list[_Item] = []
        tokens = 0
        limit = self._n_batch
        while self._pending and len(items) < self._n_seq_max:
            item = self._pending[0]
            if item.request.abandoned or item.request.future.done():
                self._pending.popleft()
                continue
            size = len(item.request.inputs[item.index])
            if items and tokens + size > limit:
                break
            self._pending.popleft()
            items.append(item)
            tokens += size
            limit = min(self._n_batch, max(PACK_TOKENS, tokens))
        return items

    def _decode(self, items: list[_Item]) -> None:
        batch = self._batch
        n = 0
        last_rows: list[int] = []
        pooled = self._pooling != POOLING_NONE
        for seq, item in enumerate(items):
            tokens = item.request.inputs[item.index]
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                # Pooling reads every token's row; without pooling only the last one is read.
                batch.logits[n] = pooled or pos == len(tokens) - 1
                n += 1
            last_rows.append(n - 1)
        batch.n_tokens = n
        rc = int(llama_cpp.llama_decode(self._ctx, batch))
        try:
            if rc != 0:
                failure = EngineFailure(f"llama.cpp could not decode the inputs (code {rc}).")
                for item in items:
                    self._fail(item.request, failure)
                return
            self.batches += 1
            for seq, item in enumerate(items):
                if pooled:
                    ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                else:  # pooling none: the last token's vector (what a causal model has read)
                    ptr = llama_cpp.llama_get_embeddings_ith(self._ctx, last_rows[seq])
                if not ptr:
                    self._fail(item.request, EngineFailure("llama.cpp returned no embedding."))
                    continue
                vector = list(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))[: self._dimensions])
                self.prompt_tokens += len(item.request.inputs[item.index])
                self.embedded_inputs += 1
                self._done(item, vector)
        finally:
            if self._memory:
                # Each batch is a world of its own: nothing is kept for the next one.
                llama_cpp.llama_memory_clear(self._memory, True)

    def _done(self, item: _Item, vector: list[float]) -> None:
        request = item.request
        request.results[item.index] = vector
        request.remaining -= 1
        if request.remaining == 0:
            vectors = [v for v in request.results if v is not None]
            # RuntimeError: the event loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                request.loop.call_soon_threadsafe(_resolve, request.future, vectors)

    @staticmethod
    def _fail(request: EmbedRequest, error: LocalLabError) -> None:
        request.abandoned = True
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody waits
            request.loop.call_soon_threadsafe(_reject, request.future, error)


def _resolve(future: asyncio.Future[list[list[float]]], vectors: list[list[float]]) -> None:
    if not future.done():
        future.set_result(vectors)


def _reject(future: asyncio.Future[list[list[float]]], error: LocalLabError) -> None:
    if not future.done():
        future.set_exception(error)
