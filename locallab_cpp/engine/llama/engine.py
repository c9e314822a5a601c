"""The llama.cpp engine: parallel slots and continuous batching over llama-cpp-python.

This is the event-loop side: it validates and queues sequences, reports counters and
renders chat prompts. The decode thread (scheduler.py) owns the llama.cpp context; the
model's vocabulary is read-only, so tokenizing may happen on any thread. Every call that
reads the model holds a lease (engine/lease.py): close() frees nothing while one is held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, EngineStats, FimTokens
from locallab_cpp.engine.lease import Leases
from locallab_cpp.engine.llama import extras, rpc
from locallab_cpp.engine.llama.chat_segments import vocab_control_texts, vocab_eog_texts
from locallab_cpp.engine.llama.chat_template import ChatTemplate
from locallab_cpp.engine.llama.embedding import LlamaEmbeddingEngine
from locallab_cpp.engine.llama.gguf import GGUFError, check_gguf
from locallab_cpp.engine.llama.loading import open_model, release_freed_memory
from locallab_cpp.engine.llama.outbox import flush
from locallab_cpp.engine.llama.prefix_reuse import open_cache
from locallab_cpp.engine.llama.scheduler import DecodeLoop
from locallab_cpp.engine.llama.slots import Job
from locallab_cpp.engine.llama.text import Pieces
from locallab_cpp.engine.types import (
    ChatMessage,
    ChatPrompt,
    GenerationHandle,
    GenerationInput,
    ToolSpec,
)
from locallab_cpp.errors import (
    ContextLengthExceeded,
    EngineFailure,
    GenerationAborted,
    LocalLabError,
    ModelUnavailable,
    ServerBusy,
    TooManySequences,
)
from locallab_cpp.models.fit import check_fits
from locallab_cpp.models.registry import ModelSpec

logger = logging.getLogger("locallab_cpp.engine")


class LlamaEngine:
    """A GGUF model served with parallel slots and continuous batching."""

    def __init__(self, *, spec: ModelSpec, path: Path, settings: Settings) -> None:
        self._settings = settings
        self._leases = Leases()
        uses_rpc = bool(spec.rpc or settings.rpc)
        try:
            self._loaded = rpc.load_guarded(lambda: open_model(spec, path, settings), uses_rpc)
        except rpc.RpcError as exc:
            raise ModelUnavailable(f"Model '{spec.id}': {exc}") from None
        self._stuck = False
        """An RPC worker was lost mid-call: the decode thread is blocked for good."""
        self._parallel = self._loaded.parallel
        model = self._loaded.model
        self._vocab = model.vocab
        self._add_bos = model.add_bos_token()
        self._n_ctx_slot = self._loaded.n_ctx_slot
        pieces = Pieces(self._vocab)
        bos = model.token_bos()
        eos = model.token_eos()
        bos_text = pieces.text(bos) if bos >= 0 else ""
        self._template = ChatTemplate(
            gguf_template=model.metadata().get("tokenizer.chat_template"),
            chat_format=spec.chat_format,
            bos_text=bos_text,
            eos_text=pieces.text(eos) if eos >= 0 else "",
            control_texts=vocab_control_texts(self._vocab),
            eog_texts=vocab_eog_texts(self._vocab),
            extra_stops=spec.stop,
        )
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=self._n_ctx_slot,
            n_ctx_train=model.n_ctx_train(),
            n_gpu_layers=self._loaded.n_gpu_layers,
            parallel=self._parallel,
            size_bytes=path.stat().st_size,
            chat_format=self._template.name,
            loaded_at=time.time(),
            details=self._loaded.details(spec, settings),
            max_token_bytes=pieces.longest(),
        )
        self._prompt_cache = open_cache(spec, path, settings, self._loaded)
        self._loop = DecodeLoop(
            self._loaded,
            parallel=self._parallel,
            n_batch=settings.n_batch,
            draft=not settings.no_draft,
            name=spec.id,
            max_generation_s=settings.max_generation_s,
            prompt_cache=self._prompt_cache,
        )
        if self._loaded.devices is not None and self._loaded.devices.uses_rpc:
            rpc.on_worker_failure(id(self), self._lost_worker)

    def _lost_worker(self, message: str) -> None:
        """An RPC worker failed mid-call (rpc.py; any thread, and no llama.cpp call: the
        context is stuck). Every request of this model ends with an error saying what to
        do; the model manager opens it again at the next request."""
        loop = self._loop
        self._stuck = True
        with loop.cond:
            loop.failed = True
            loop.stopping = True
            jobs = [s.job for s in loop.slots if s.job is not None] + list(loop.pending)
            loop.pending.clear()
        error = EngineFailure(
            f"An RPC worker of model '{self._info.model_id}' went away ({message}). Start "
            "the worker again; the next request loads the model again."
        )
        flush([(job.handle, error) for job in jobs])

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model."""
        return self._info

    @property
    def failed(self) -> bool:
        """Whether the decode thread died; see :attr:`locallab_cpp.engine.base.Engine.failed`."""
        return self._loop.failed

    def stats(self) -> EngineStats:
        """Live counters, read without the decode thread's lock: a slightly stale view is
        fine, and the thread holds that lock while it admits jobs, which may restore a cached
        prompt from disk; /health and /metrics must not wait on that."""
        loop = self._loop
        # list() copies the deque in one C call (no thread switch inside), so the copy is
        # consistent even while the decode thread admits jobs.
        waiting = list(loop.pending)
        queued = sum(1 for job in waiting if not job.handle.cancelled.is_set())
        return EngineStats(
            active=loop.n_active,
            queued=queued,
            generated_tokens=loop.generated,
            prompt_tokens=loop.prompt_total,
            cached_prompt_tokens=loop.cached_total,
            drafted_tokens=loop.drafted_total,
            evicted_tokens=loop.pool.evicted_total,
            prompt_cache=None if self._prompt_cache is None else self._prompt_cache.stats(),
            kv_used_tokens=loop.pool.used(loop.slots),
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text``; control-token texts become control tokens only when
        ``special`` (client text in a chat is tokenized without). The vocabulary is
        read-only, so any thread may call this; GenerationAborted once the engine is
        closing."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        with self._leases.hold():
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, n_max, add_bos and self._add_bos, special
            )
        if n < 0:
            raise EngineFailure("tokenization failed")
        return list(buf[:n])

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
    ) -> ChatPrompt:
        """Render a conversation with the model's chat template; see
        :meth:`locallab_cpp.engine.base.Engine.chat_prompt`."""
        with self._leases.hold():
            return self._template.render(messages, tools)

    def fim_tokens(self) -> FimTokens | None:
        """The FIM token ids; see :meth:`locallab_cpp.engine.base.Engine.fim_tokens`."""
        with self._leases.hold():
            vocab = self._vocab
            pre = llama_cpp.llama_vocab_fim_pre(vocab)
            suf = llama_cpp.llama_vocab_fim_suf(vocab)
            mid = llama_cpp.llama_vocab_fim_mid(vocab)
            if min(pre, suf, mid) < 0:  # LLAMA_TOKEN_NULL: the model was not trained for FIM
                return None
            rep = llama_cpp.llama_vocab_fim_rep(vocab)
            sep = llama_cpp.llama_vocab_fim_sep(vocab)
            bos = self._loaded.model.token_bos()
            return FimTokens(
                pre=pre,
                suf=suf,
                mid=mid,
                rep=rep if rep >= 0 else None,
                sep=sep if sep >= 0 else None,
                bos=bos if self._add_bos and bos >= 0 else None,
            )

    def submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        """Queue sequences, all or none; see :class:`locallab_cpp.engine.base.Engine`."""
        with self._leases.hold():
            return self._submit(inputs)

    def _submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        loop = asyncio.get_running_loop()
        groups = [inp.copies() for inp in inputs]
        for inp in inputs:
            ContextLengthExceeded.check(len(inp.prompt_tokens), self._n_ctx_slot)
            extras.validate(inp, self._vocab, self._loaded.model.n_vocab())
        TooManySequences.check(
            sum(len(group) for group in groups), self._parallel, self._settings.queue_size
        )
        jobs = []
        decode = self._loop
        with decode.cond:
            if decode.failed:
                raise GenerationAborted(
                    "The model's engine failed; retry: the next request reopens it.",
                    retry_after=1,
                )
            if decode.stopping:
                raise GenerationAborted("The model is being unloaded; retry shortly.")
            count = sum(len(group) for group in groups)
            waiting_after = decode.queued() + count - decode.free_slots()
            if waiting_after > self._settings.queue_size:
                raise ServerBusy(retry_after=self._retry_after())
            for group in groups:
                group_jobs = []
                for inp in group:
                    handle = GenerationHandle(loop=loop, on_cancel=self._on_cancel)
                    max_tokens = min(inp.max_tokens, self._n_ctx_slot - len(inp.prompt_tokens))
                    group_jobs.append(Job(handle=handle, inp=inp, max_tokens=max_tokens))
                decode.copies.queue(group_jobs)
                jobs.extend(group_jobs)
            decode.pending.extend(jobs)
            decode.cond.notify()
        return [job.handle for job in jobs]

    def _retry_after(self) -> int:
        # A rough wait: a queue place frees when a sequence ends; a few seconds is typical.
        return max(1, min(30, len(self._loop.pending) // max(1, self._parallel)))

    def _on_cancel(self, _handle: GenerationHandle) -> None:
        self._loop.wake()

    def close(self, reason: LocalLabError | None = None) -> None:
        """Stop the decode thread, end in-flight sequences with ``reason``, free memory.

        New calls are refused from now on, and the memory is freed only once the calls
        already inside (a long tokenization in a worker thread) have returned. A failed
        engine is freed too.
        """
        self._leases.close()
        rpc.on_worker_failure(id(self), None)
        if self._stuck:
            # Its thread is blocked inside llama.cpp for good: freeing the context under it
            # is not safe, so its memory stays taken until the server restarts.
            logger.warning("model %s left in memory: an RPC worker was lost under it",
                           self._info.model_id)  # fmt: skip
            return
        if self._loop.stop(reason or GenerationAborted()):
            if self._prompt_cache is not None and self._prompt_cache.files is not None:
                self._prompt_cache.files.close()  # queued writes get a few seconds
            self._loaded.close()
            release_freed_memory()


EngineFactory = Callable[[ModelSpec, Path, Settings], "LlamaEngine | LlamaEmbeddingEngine"]


class LlamaEngineFactory:
    """Opens LlamaEngines; the ModelManager also asks it to check a file before a load."""

    def __call__(
        self, spec: ModelSpec, path: Path, settings: Settings
    ) -> LlamaEngine | LlamaEmbeddingEngine:
        """Load ``path`` and start its decode thread (blocking: call from a worker thread):
        a LlamaEmbeddingEngine for an embedding or rerank model (registry ``kind``)."""
        if spec.kind in ("embedding", "rerank"):
            return LlamaEmbeddingEngine(spec=spec, path=path, settings=settings)
        return LlamaEngine(spec=spec, path=path, settings=settings)

    def preflight(self, spec: ModelSpec, path: Path) -> None:
        """Raise ModelUnavailable unless ``path`` is a whole GGUF file (gguf.check_gguf).

        Cheap (the header only) and run before the current model is closed, so that a
        damaged or truncated file never costs the model being served.
        """
        try:
            check_gguf(path)
        except (GGUFError, OSError) as exc:
            detail = str(exc) if isinstance(exc, GGUFError) else type(exc).__name__
            raise ModelUnavailable(
                f"Model '{spec.id}' cannot be loaded: its GGUF file is damaged or incomplete "
                f"({detail}). Download it again (python -m locallab_cpp models pull)."
            ) from None

    def check_memory(self, spec: ModelSpec, path: Path, settings: Settings, freed: int) -> None:
        """Raise InsufficientMemory unless the model fits once ``freed`` bytes (the model
        being replaced) are given back: models/fit.py, run before anything is closed."""
        check_fits(spec, path, settings, freed)


open_llama_engine = LlamaEngineFactory()
"""Load a model and start its decode thread (blocking: call from a worker thread)."""
