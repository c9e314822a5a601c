"""The llama.cpp engine: parallel slots and continuous batching over llama-cpp-python.

One thread owns the llama.cpp context (it is not thread-safe) and runs the decode loop.
Each step builds one ``llama_batch`` holding, for every busy slot, either its next token
(a sequence being generated) or a chunk of its prompt (a sequence being prefilled), each
under the slot's own ``seq_id``. New requests join at the next step. Every slot keeps the
tokens that are in its KV cache, so a request whose prompt starts with them (a follow-up
chat turn, a shared system prompt) only computes the new tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from locallab_cpp.engine import drafting
from locallab_cpp.engine.base import EngineInfo, EngineStats
from locallab_cpp.engine.chat import ChatPrompt, ChatTemplate
from locallab_cpp.engine.repack import apply_repack, resolve_repack
from locallab_cpp.engine.types import (
    Event,
    Finished,
    FinishReason,
    GenerationHandle,
    GenerationInput,
    SamplingParams,
    TextChunk,
)
from locallab_cpp.errors import (
    EngineFailure,
    GenerationAborted,
    LocalLabError,
    ModelUnavailable,
    PayloadTooLarge,
    ServerBusy,
)
from locallab_cpp.registry import ModelSpec
from locallab_cpp.settings import Settings

logger = logging.getLogger("locallab_cpp.engine")

DEFAULT_PROMPT_ROOM = 2048
"""Tokens of prompt the default context leaves room for beside max_length's default."""
PENALTY_LAST_N = 64
"""Tokens the repetition penalty looks back over (llama.cpp's default)."""
PREFIX_REUSE_MIN_TOKENS = 32
"""A cached prefix shorter than this is not worth choosing a slot for (see _admit)."""
SHARED_CHUNK_DIVISOR = 4
"""While other slots are generating, a prompt chunk is n_batch / this, so their streams keep
flowing during a long prefill."""
ALL_LAYERS = 999
CPU_UBATCH = 128
"""Tokens llama.cpp computes at once on the CPU. Its compute buffer grows with this; 128
keeps the CPU's matrix kernels as busy as 512 (600-token prompts, llama.cpp alone: median
993 tok/s at 128, 939 at 256), and the server's peak memory is 7.5 MiB lower than at 256
(docs/benchmarks.md, Memory)."""

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            from llama_cpp import _logger

            # llama.cpp logs every tensor at load; keep only its errors unless debugging.
            _logger.set_verbose(logger.isEnabledFor(logging.DEBUG))
            llama_cpp.llama_backend_init()
            _backend_ready = True


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (Metal, CUDA...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


def resolve_gpu_layers(requested: int | None) -> int:
    """The n_gpu_layers to use: all where offload is possible, unless the user said."""
    if requested is None:
        return ALL_LAYERS if gpu_offload_supported() else 0
    if requested < 0:
        return ALL_LAYERS
    return requested


def ubatch_size(n_batch: int, n_gpu_layers: int) -> int:
    """llama.cpp's n_ubatch: CPU_UBATCH on the CPU; a GPU computes its layers faster in
    bigger pieces and keeps the compute buffer in its own memory, so it gets all of n_batch."""
    if n_gpu_layers > 0 and gpu_offload_supported():
        return n_batch
    return min(n_batch, CPU_UBATCH)


def physical_cores() -> int:
    """Physical core count, the best default thread count for llama.cpp."""
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


@dataclass(eq=False)
class _Job:
    """A sequence inside the engine thread."""

    handle: GenerationHandle
    inp: GenerationInput
    max_tokens: int
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    text: str = ""
    emitted: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    cached_tokens: int = 0


@dataclass(eq=False)
class _Slot:
    """One parallel sequence of the context: its seq_id and what its KV cache holds."""

    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)
    job: _Job | None = None
    sampler: _internals.LlamaSampler | None = None
    """llama.cpp sampler chain for sampled decoding; None for greedy decoding."""
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=PENALTY_LAST_N))
    """The last tokens (prompt included) that the repetition penalty applies to."""
    prompt_pos: int = 0
    next_token: int | None = None
    """Sampled but not yet decoded; fed at the next step."""
    out_index: int = -1
    """Index in the current batch whose logits this slot samples from, or -1."""
    drafts: list[int] = field(default_factory=list)
    """Guessed next tokens sent in the current batch after ``out_index`` (drafting.py)."""
    draft_rows: list[int] = field(default_factory=list)
    """Batch indices of ``drafts``, whose logits verify them."""

    @property
    def prefilling(self) -> bool:
        return self.job is not None and self.prompt_pos < len(self.job.inp.prompt_tokens)


def _kv_cache_bytes(metadata: Mapping[str, str], cells: int) -> int:
    """Bytes of the f16 KV cache for ``cells`` token cells, from the GGUF's metadata."""
    arch = metadata.get("general.architecture", "")

    def number(key: str, default: int = 0) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:  # per-layer arrays: not worth parsing for an estimate
            return default

    layers = number("block_count")
    heads = number("attention.head_count", 1)
    kv_heads = number("attention.head_count_kv", heads)
    head_dim = number("embedding_length") // max(1, heads)
    key_len = number("attention.key_length", head_dim)
    value_len = number("attention.value_length", head_dim)
    return layers * kv_heads * (key_len + value_len) * 2 * cells


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _deliver(items: list[tuple[GenerationHandle, Event]]) -> None:
    for handle, event in items:
        handle.queue.put_nowait(event)


def _stop_hold(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` to hold back: they may begin a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


class LlamaEngine:
    """A GGUF model served with parallel slots and continuous batching."""

    def __init__(
        self,
        *,
        spec: ModelSpec,
        path: Path,
        settings: Settings,
    ) -> None:
        _init_backend()
        self._settings = settings
        n_gpu_layers = resolve_gpu_layers(settings.n_gpu_layers)
        threads = settings.threads or physical_cores()
        self._parallel = settings.parallel

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        # Read the weights instead of mapping them: repacked tensors would otherwise stay
        # resident twice (mapped file pages and the repacked copy).
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        repack = resolve_repack(
            settings.repack, path, gpu_offload=n_gpu_layers > 0 and gpu_offload_supported()
        )
        # Held for the engine's life: llama.cpp keeps the override list's pointer.
        self._repack = apply_repack(mparams, repack)
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except ValueError:
            raise ModelUnavailable(
                f"llama.cpp could not load the GGUF of model '{spec.id}'; the file may be "
                "damaged or of an architecture this llama.cpp does not support."
            ) from None
        self._vocab = self._model.vocab
        self._n_vocab = self._model.n_vocab()
        n_ctx_train = self._model.n_ctx_train()
        n_ctx_slot = settings.n_ctx or min(
            n_ctx_train or 8192 + DEFAULT_PROMPT_ROOM, 8192 + DEFAULT_PROMPT_ROOM
        )

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx_slot * self._parallel
        cparams.n_batch = settings.n_batch
        cparams.n_ubatch = ubatch_size(settings.n_batch, n_gpu_layers)
        cparams.n_seq_max = self._parallel
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # Full-size SWA cache: prefix reuse needs to cut a sequence's cache at any position.
        cparams.swa_full = True
        # One KV stream per slot: each slot gets exactly its context, and attention does not
        # scan the other slots' cells.
        cparams.kv_unified = False
        cparams.no_perf = True
        # At most one output (logits row) per slot per step, or ROWS when drafting fills a
        # step (see drafting.py). Without this bound llama.cpp
        # sizes its compute buffer for logits of every token of a full batch: with Gemma's
        # 262k vocabulary that is 512 MB that we would never use.
        cparams.n_outputs_max = max(self._parallel, drafting.ROWS)
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        except ValueError:
            self._model.close()
            raise ModelUnavailable(
                f"llama.cpp could not create a context for model '{spec.id}' "
                f"({n_ctx_slot} tokens x {self._parallel} slots); lower --n-ctx or --parallel."
            ) from None
        self._n_ctx_slot = llama_cpp.llama_n_ctx(self._ctx.ctx) // self._parallel
        self._batch = llama_cpp.llama_batch_init(settings.n_batch, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)

        metadata = self._model.metadata()
        bos = self._model.token_bos()
        eos = self._model.token_eos()
        self._add_bos = self._model.add_bos_token()
        self._bos_text = self._token_text(bos) if bos >= 0 else ""
        self._template = ChatTemplate(
            gguf_template=metadata.get("tokenizer.chat_template"),
            chat_format=spec.chat_format,
            bos_text=self._bos_text,
            eos_text=self._token_text(eos) if eos >= 0 else "",
        )
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=self._n_ctx_slot,
            n_ctx_train=n_ctx_train,
            n_gpu_layers=n_gpu_layers if gpu_offload_supported() else 0,
            parallel=self._parallel,
            size_bytes=path.stat().st_size,
            chat_format=self._template.name,
            loaded_at=time.time(),
            details={
                "architecture": metadata.get("general.architecture", ""),
                "description": self._model.desc(),
                "n_params": self._model.n_params(),
                "n_vocab": self._n_vocab,
                "threads": threads,
                "n_batch": settings.n_batch,
                "quantization": spec.quantization,
                "kv_cache_bytes": _kv_cache_bytes(metadata, self._n_ctx_slot * self._parallel),
                "repack": self._repack.plan.mode,
                "repack_reason": self._repack.plan.reason,
            },
        )

        self._slots = [_Slot(seq_id=i) for i in range(self._parallel)]
        self._drafts = drafting.DraftController() if not settings.no_draft else None
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._close_reason: LocalLabError | None = None
        self._n_active = 0
        self._generated = 0
        self._prompt_total = 0
        self._cached_total = 0
        self._drafted_total = 0
        self._thread = threading.Thread(
            target=self._run, name=f"llama-decode[{spec.id}]", daemon=True
        )
        self._thread.start()

    # ----- the event-loop side -------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model."""
        return self._info

    def stats(self) -> EngineStats:
        """Live counters (read without the lock: a slightly stale view is fine)."""
        return EngineStats(
            active=self._n_active,
            queued=len(self._pending),
            generated_tokens=self._generated,
            prompt_tokens=self._prompt_total,
            cached_prompt_tokens=self._cached_total,
            drafted_tokens=self._drafted_total,
        )

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``. The vocabulary is read-only, so any thread may call this."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buf, n_max, add_bos and self._add_bos, True
        )
        if n < 0:
            raise EngineFailure("tokenization failed")
        return list(buf[:n])

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> ChatPrompt:
        """Render a conversation with the model's chat template."""
        return self._template.render(messages)

    def submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        """Queue sequences, all or none; see :class:`locallab_cpp.engine.base.Engine`."""
        import asyncio

        loop = asyncio.get_running_loop()
        for inp in inputs:
            if len(inp.prompt_tokens) >= self._n_ctx_slot:
                raise PayloadTooLarge(
                    f"The prompt is {len(inp.prompt_tokens)} tokens; this model's context "
                    f"holds {self._n_ctx_slot} per request. Shorten the prompt, or restart "
                    "the server with a larger --n-ctx."
                )
            if not inp.prompt_tokens:
                raise PayloadTooLarge("The prompt is empty after tokenization.")
        jobs = []
        with self._cond:
            if self._stopping:
                raise GenerationAborted("The model is being unloaded; retry shortly.")
            free = sum(1 for s in self._slots if s.job is None)
            waiting_after = len(self._pending) + len(inputs) - free
            if waiting_after > self._settings.queue_size:
                raise ServerBusy(retry_after=self._retry_after())
            for inp in inputs:
                handle = GenerationHandle(loop=loop, on_cancel=self._on_cancel)
                max_tokens = min(inp.max_tokens, self._n_ctx_slot - len(inp.prompt_tokens))
                jobs.append(_Job(handle=handle, inp=inp, max_tokens=max_tokens))
            self._pending.extend(jobs)
            self._cond.notify()
        return [job.handle for job in jobs]

    def _retry_after(self) -> int:
        # A rough wait: a queue place frees when a sequence ends; a few seconds is typical.
        return max(1, min(30, len(self._pending) // max(1, self._parallel)))

    def _on_cancel(self, _handle: GenerationHandle) -> None:
        with self._cond:
            self._cond.notify()

    def close(self, reason: LocalLabError | None = None) -> None:
        """Stop the decode thread, end in-flight sequences with ``reason``, free memory."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._close_reason = reason or GenerationAborted()
            self._cond.notify_all()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        for slot in self._slots:
            if slot.sampler is not None:
                slot.sampler.close()
        self._ctx.close()
        self._model.close()

    # ----- the engine thread ---------------------------------------------------------

    def _token_text(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = llama_cpp.llama_token_to_piece(
            self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special
        )
        if n < 0:
            self._piece_buf = ctypes.create_string_buffer(-n + 16)
            n = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special
            )
        return self._piece_buf.raw[:n]

    def _run(self) -> None:
        outbox: list[tuple[GenerationHandle, Event]] = []
        try:
            while True:
                with self._cond:
                    while (
                        not self._stopping
                        and not self._pending
                        and all(s.job is None for s in self._slots)
                    ):
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._admit()
                self._drop_cancelled()
                if any(s.job is not None for s in self._slots):
                    self._step(outbox)
                if outbox:
                    self._flush(outbox)
        except Exception as exc:  # a crash here must not hang every waiting request
            logger.exception("decode loop failed")
            self._fail_all(EngineFailure(), outbox)
            with self._cond:
                self._stopping = True
            del exc
        self._fail_all(self._close_reason or GenerationAborted(), outbox)

    def _flush(self, outbox: list[tuple[GenerationHandle, Event]]) -> None:
        by_loop: dict[Any, list[tuple[GenerationHandle, Event]]] = {}
        for item in outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            # A closed loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)
        outbox.clear()

    def _fail_all(self, error: LocalLabError, outbox: list[tuple[GenerationHandle, Event]]) -> None:
        with self._cond:
            jobs = [s.job for s in self._slots if s.job is not None] + list(self._pending)
            self._pending.clear()
        for slot in self._slots:
            if slot.job is not None:
                self._release(slot)
        for job in jobs:
            outbox.append((job.handle, error))
        self._flush(outbox)

    def _admit(self) -> None:
        """Give queued jobs free slots: the one whose cache shares a real prefix with the
        prompt, else the lowest-numbered one."""
        while self._pending:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._pending.popleft()
            if job.handle.cancelled.is_set():
                continue
            prompt = job.inp.prompt_tokens
            best = max(free, key=lambda s: _common_prefix(s.kv_tokens, prompt))
            if _common_prefix(best.kv_tokens, prompt) >= PREFIX_REUSE_MIN_TOKENS:
                self._assign(best, job)
            else:
                # With one KV stream per slot, llama.cpp puts only consecutive seq_ids in one
                # micro-batch; active slots scattered over 0..N split a step into several
                # graph runs (4 scattered streams decode at 85 tok/s, 4 adjacent ones at 122).
                # The lowest free slot keeps the active ones packed together.
                self._assign(free[0], job)

    def _assign(self, slot: _Slot, job: _Job) -> None:
        prompt = job.inp.prompt_tokens
        keep = _common_prefix(slot.kv_tokens, prompt)
        if keep == len(prompt):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        mem = self._ctx.memory
        if not llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
            keep = 0
        del slot.kv_tokens[keep:]
        slot.job = job
        slot.prompt_pos = keep
        slot.next_token = None
        job.cached_tokens = keep
        params = job.inp.sampling
        slot.recent.clear()
        slot.recent.extend(prompt[-PENALTY_LAST_N:])
        slot.sampler = None if params.greedy else self._make_sampler(params)
        self._n_active += 1
        self._prompt_total += len(prompt)
        self._cached_total += keep

    def _make_sampler(self, params: SamplingParams) -> _internals.LlamaSampler:
        # The repetition penalty is not in the chain: _sample applies it to the few recent
        # tokens' logits directly, where llama.cpp's penalty sampler walks the whole
        # vocabulary (262k entries for Gemma) on every token.
        chain = _internals.LlamaSampler()
        if params.top_k > 0:
            chain.add_top_k(params.top_k)
        chain.add_top_p(params.top_p, 1)
        chain.add_temp(params.temperature)
        seed = params.seed if params.seed is not None else random.getrandbits(32) - 1
        chain.add_dist(seed % 0xFFFFFFFF)
        return chain

    def _sample(self, slot: _Slot, job: _Job, index: int) -> int:
        """Pick the next token of ``slot`` from the logits at batch position ``index``."""
        params = job.inp.sampling
        logits = self._logits(index)
        penalty = params.repetition_penalty
        if penalty != 1.0 and slot.recent:
            # llama.cpp's rule (penalty_repeat): shrink positive logits, grow negative ones.
            ids = np.fromiter(set(slot.recent), dtype=np.intp)
            values = logits[ids]
            logits[ids] = np.where(values > 0, values / penalty, values * penalty)
        if slot.sampler is None:
            # Greedy: an arg-max over the row is the same choice as llama.cpp's greedy
            # sampler, without copying every candidate into a token-data array.
            token = int(logits.argmax())
        else:
            token = llama_cpp.llama_sampler_sample(slot.sampler.sampler, self._ctx.ctx, index)
        slot.recent.append(token)
        return token

    def _release(self, slot: _Slot) -> None:
        slot.job = None
        slot.next_token = None
        slot.out_index = -1
        slot.drafts.clear()
        slot.draft_rows.clear()
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        self._n_active -= 1

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.handle.cancelled.is_set():
                self._release(slot)

    def _plain_greedy(self, slot: _Slot) -> bool:
        job = slot.job
        return (
            job is not None and slot.sampler is None and job.inp.sampling.repetition_penalty == 1.0
        )

    def _drafts_this_step(self, generating: list[_Slot], decode_only: bool) -> int:
        """Guesses per sequence for this step (0: plain step); see drafting.py.

        Only steps that decode and nothing else draft, so that the controller compares
        like with like.
        """
        if self._drafts is None or not generating or not decode_only:
            return 0
        count = drafting.drafts_per_sequence(len(generating))
        if count == 0:
            return 0
        for slot in generating:
            if not self._plain_greedy(slot):
                return 0
            if len(slot.kv_tokens) + 1 + count >= self._n_ctx_slot:
                return 0
        return count if self._drafts.should_draft(len(generating)) else 0

    def _logits(self, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The logits row of batch position ``index``, as a view (no copy)."""
        row = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
        return np.ctypeslib.as_array(row, shape=(self._n_vocab,))

    def _argmax(self, index: int) -> int:
        return int(self._logits(index).argmax())

    def _step(self, outbox: list[tuple[GenerationHandle, Event]]) -> None:
        batch = self._batch
        n = 0
        capacity = self._settings.n_batch

        touched: list[_Slot] = []

        def add(slot: _Slot, token: int, want_logits: bool, draft: bool = False) -> None:
            nonlocal n
            if not touched or touched[-1] is not slot:
                touched.append(slot)
            pos = len(slot.kv_tokens)
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq_id
            batch.logits[n] = want_logits
            slot.kv_tokens.append(token)
            if draft:
                slot.drafts.append(token)
                slot.draft_rows.append(n)
            elif want_logits:
                slot.out_index = n
            n += 1

        generating = [s for s in self._slots if s.job is not None and s.next_token is not None]
        # Only steps that decode and nothing else tell the controller what drafting is worth.
        decode_only = not any(s.prefilling for s in self._slots)
        n_drafts = self._drafts_this_step(generating, decode_only)
        for slot in generating:
            token = slot.next_token
            assert token is not None
            slot.next_token = None
            add(slot, token, True)
            if n_drafts:
                guesses = drafting.propose(slot.kv_tokens, n_drafts)
                # llama.cpp micro-batches per-slot KV streams only with equal token counts
                # per sequence, so every sequence sends the same number of guesses.
                guesses += [token] * (n_drafts - len(guesses))
                for guess in guesses:
                    add(slot, guess, True, draft=True)
        budget = capacity - n
        if generating:
            budget = min(budget, max(1, capacity // SHARED_CHUNK_DIVISOR))
        for slot in self._slots:
            if budget <= 0:
                break
            if not slot.prefilling:
                continue
            assert slot.job is not None
            prompt = slot.job.inp.prompt_tokens
            end = min(len(prompt), slot.prompt_pos + budget)
            for i in range(slot.prompt_pos, end):
                add(slot, prompt[i], i == len(prompt) - 1)
            budget -= end - slot.prompt_pos
            slot.prompt_pos = end
        if n == 0:
            return
        batch.n_tokens = n
        started = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            logger.error("llama_decode returned %d", rc)
            for slot in touched:
                slot.drafts.clear()
                slot.draft_rows.clear()
                job = slot.job
                if job is not None:
                    llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq_id, -1, -1)
                    slot.kv_tokens.clear()
                    outbox.append((job.handle, EngineFailure()))
                    self._release(slot)
            return
        produced = 0
        for slot in self._slots:
            if slot.out_index < 0 or slot.job is None:
                continue
            index, slot.out_index = slot.out_index, -1
            if slot.draft_rows:
                tokens = self._verify(slot, index)
            else:
                tokens = [self._sample(slot, slot.job, index)]
            produced += len(tokens)
            job = slot.job
            for token in tokens:
                self._on_token(slot, token, outbox)
                if slot.job is not job:  # finished (end token, stop string or limit)
                    break
        if self._drafts is not None and generating and decode_only:
            self._drafts.record(
                len(generating), n_drafts > 0, produced, time.perf_counter() - started
            )

    def _verify(self, slot: _Slot, index: int) -> list[int]:
        """The tokens greedy decoding gives from this step's rows of ``slot``: its next token,
        then one more for every guess that was right. Wrong guesses leave the KV cache."""
        tokens = [self._argmax(index)]
        for guess, row in zip(slot.drafts, slot.draft_rows, strict=True):
            if guess != tokens[-1]:
                break
            tokens.append(self._argmax(row))
        self._drafted_total += len(tokens) - 1
        wrong = len(slot.drafts) - (len(tokens) - 1)
        if wrong:
            keep = len(slot.kv_tokens) - wrong
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq_id, keep, -1)
            del slot.kv_tokens[keep:]
        slot.drafts.clear()
        slot.draft_rows.clear()
        return tokens

    def _on_token(
        self, slot: _Slot, token: int, outbox: list[tuple[GenerationHandle, Event]]
    ) -> None:
        job = slot.job
        assert job is not None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop", outbox)
            return
        job.completion_tokens += 1
        job.token_ids.append(token)
        self._generated += 1
        job.text += job.decoder.decode(self._piece(token))
        stops = job.inp.stop
        if stops:
            start = max(0, job.emitted - max(len(s) for s in stops))
            cut = -1
            for stop in stops:
                found = job.text.find(stop, start)
                if found != -1 and (cut == -1 or found < cut):
                    cut = found
            if cut != -1:
                job.text = job.text[:cut]
                self._finish(slot, "stop", outbox, flush=False)
                return
        if job.completion_tokens >= job.max_tokens:
            self._finish(slot, "length", outbox)
            return
        self._emit(job, len(job.text) - _stop_hold(job.text, stops), outbox)
        slot.next_token = token

    def _emit(self, job: _Job, upto: int, outbox: list[tuple[GenerationHandle, Event]]) -> None:
        if upto > job.emitted:
            outbox.append((job.handle, TextChunk(job.text[job.emitted : upto])))
            job.emitted = upto

    def _finish(
        self,
        slot: _Slot,
        reason: FinishReason,
        outbox: list[tuple[GenerationHandle, Event]],
        *,
        flush: bool = True,
    ) -> None:
        job = slot.job
        assert job is not None
        if flush:  # text held back for a stop string that never came, or a partial UTF-8 tail
            job.text += job.decoder.decode(b"", final=True)
        self._emit(job, len(job.text), outbox)
        outbox.append(
            (
                job.handle,
                Finished(
                    finish_reason=reason,
                    prompt_tokens=len(job.inp.prompt_tokens),
                    completion_tokens=job.completion_tokens,
                    cached_tokens=job.cached_tokens,
                    token_ids=tuple(job.token_ids),
                ),
            )
        )
        job.handle.done = True
        self._release(slot)


EngineFactory = Callable[[ModelSpec, Path, Settings], LlamaEngine]


def open_llama_engine(spec: ModelSpec, path: Path, settings: Settings) -> LlamaEngine:
    """Load ``path`` and start its decode thread (blocking: call from a worker thread)."""
    return LlamaEngine(spec=spec, path=path, settings=settings)
