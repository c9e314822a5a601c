"""The engine thread: continuous batching over the slots of one llama.cpp context.

Each step builds one ``llama_batch`` holding, for every busy slot, either its next token
(a sequence being generated) or a chunk of its prompt (a sequence being prefilled), each
under the slot's own ``seq_id``. New requests join at the next step. Every slot keeps the
tokens that are in its KV cache, so a request whose prompt starts with them (a follow-up
chat turn, a shared system prompt) only computes the new tokens. Only this thread touches
the context.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import llama_cpp

from locallab_cpp.engine.llama import drafting, extras, guesses, pool
from locallab_cpp.engine.llama.batch import StepBatch
from locallab_cpp.engine.llama.copies import CopyGroups
from locallab_cpp.engine.llama.loading import LoadedModel
from locallab_cpp.engine.llama.outbox import Outbox, flush
from locallab_cpp.engine.llama.prefix_reuse import PrefixReuse
from locallab_cpp.engine.llama.prompt_cache import PromptCache
from locallab_cpp.engine.llama.sampling import (
    apply_repetition_penalty,
    logits_row,
    make_sampler,
    sample,
)
from locallab_cpp.engine.llama.slots import Job, Slot, common_prefix
from locallab_cpp.engine.llama.text import Pieces, find_stop, stop_hold
from locallab_cpp.engine.llama.windows import Windows
from locallab_cpp.engine.types import (
    EngineFinishReason,
    Finished,
    TextChunk,
    TokenLogprob,
)
from locallab_cpp.errors import EngineFailure, GenerationAborted, LocalLabError, ServerBusy

logger = logging.getLogger("locallab_cpp.engine")

PREFIX_REUSE_MIN_TOKENS = 32
"""A cached prefix shorter than this is not worth choosing a slot for (see _admit)."""
SHARED_CHUNK_DIVISOR = 4
"""While other slots generate, a step is n_batch / this rows (whole micro-batches) of their
tokens and a prompt chunk, so their streams keep flowing during a long prefill."""


class DecodeLoop:
    """Slots, the queue of waiting jobs, and the thread that decodes them."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        parallel: int,
        n_batch: int,
        draft: bool,
        name: str,
        max_generation_s: float = 0.0,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        self._loaded = loaded
        self._ctx = loaded.ctx.ctx
        self._memory = loaded.ctx.memory
        self._vocab = loaded.model.vocab
        self._n_vocab = loaded.model.n_vocab()
        self._n_ctx_slot = loaded.n_ctx_slot
        self._batch = StepBatch(n_batch)
        self._ubatch = max(1, int(llama_cpp.llama_n_ubatch(self._ctx)))
        self._pieces = Pieces(self._vocab)
        self.slots = [Slot(seq_id=i) for i in range(parallel)]
        self.windows = Windows(
            self._ctx, self._memory, n_swa=loaded.n_swa, windowed=loaded.windowed
        )
        """Cuts of slots' caches and sliding-window checkpoints; see windows.py."""
        self._drafts = drafting.DraftController() if draft else None
        self.copies = CopyGroups(self._ctx, self._memory, self._n_vocab, self.windows)
        """Copies of one prompt (GenerationInput.n); see copies.py."""
        self.pool = pool.KvPool(loaded.pool_tokens, self.windows.truncate)
        """The KV cells every slot shares; see pool.py."""
        self.reuse = (
            None
            if prompt_cache is None
            else PrefixReuse(self._ctx, prompt_cache, self.windows, self.pool)
        )
        """Cached prompt states beyond the slots (prefix_reuse.py, prompt_cache.py)."""
        self.pending: deque[Job] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        """No new job is taken: stop() was called, or the thread failed."""
        self.failed = False
        """The thread ended with an unexpected exception; the context may be in any state,
        so the engine must be closed and opened again (ModelManager does)."""
        self._stop_requested = False
        self._close_reason: LocalLabError | None = None
        self._time_limit = max_generation_s
        self._started = [0.0] * parallel
        """When each slot's job was admitted (time.monotonic), for max_generation_s."""
        self.n_active = 0
        self.generated = 0
        self.prompt_total = 0
        self.cached_total = 0
        self.drafted_total = 0
        self._thread = threading.Thread(target=self._run, name=f"llama-decode[{name}]", daemon=True)
        self._thread.start()

    def free_slots(self) -> int:
        """Slots without a job (call with ``cond`` held)."""
        return sum(1 for s in self.slots if s.job is None)

    def queued(self) -> int:
        """Queued jobs whose client is still waiting (call with ``cond`` held): a cancelled
        job stays in ``pending`` until admission skips it, and must not take a queue place
        (or count as waiting for a model switch) meanwhile."""
        return sum(1 for job in self.pending if not job.handle.cancelled.is_set())

    def wake(self) -> None:
        """Make the thread look at its queue and cancellations again."""
        with self.cond:
            self.cond.notify()

    def stop(self, reason: LocalLabError) -> bool:
        """End every sequence with ``reason``, join the thread and free the batch and the
        samplers; False if it was already called. A thread that failed has stopped by
        itself and is still cleaned up here."""
        with self.cond:
            if self._stop_requested:
                return False
            self._stop_requested = True
            self.stopping = True
            self._close_reason = reason
            self.cond.notify_all()
        self._thread.join()
        self._batch.free()
        for slot in self.slots:
            if slot.sampler is not None:
                slot.sampler.close()
        return True

    # ----- the engine thread -------------------------------------------------------------

    def _run(self) -> None:
        outbox: Outbox = []
        try:
            while True:
                with self.cond:
                    while (
                        not self.stopping
                        and not self.pending
                        and all(s.job is None for s in self.slots)
                    ):
                        self.cond.wait()
                    if self.stopping:
                        break
                    self._admit()
                self._drop_cancelled()
                self.copies.adopt_orphans()
                if any(s.job is not None for s in self.slots):
                    self._step(outbox)
                if outbox:
                    flush(outbox)
        except Exception:  # a crash here must not hang every waiting request
            logger.exception("decode loop failed")
            with self.cond:
                # Marked before the jobs are failed, so that no submit slips in between.
                self.failed = True
                self.stopping = True
            self._fail_all(EngineFailure(), outbox)
        self._fail_all(self._close_reason or GenerationAborted(), outbox)

    def _fail_all(self, error: LocalLabError, outbox: Outbox) -> None:
        with self.cond:
            jobs = [s.job for s in self.slots if s.job is not None] + list(self.pending)
            self.pending.clear()
        for slot in self.slots:
            if slot.job is not None:
                self._release(slot)
        for job in jobs:
            outbox.append((job.handle, error))
        flush(outbox)

    def _admit(self) -> None:
        """Give queued jobs free slots, in order, while the KV pool has room for their
        prompts (pool.py): the slot whose cache shares a real prefix with the prompt, else
        an empty one, else the least recently used (its cache is the least likely reused)."""
        while self.pending:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self.pending[0]
            if job.handle.cancelled.is_set():
                self.pending.popleft()
                self.copies.drop_queued(job)
                continue
            prompt = job.inp.prompt_tokens
            if not self.pool.admits(self.slots, len(prompt)):
                return  # waits, first in line, for busy sequences to free cells
            self.pending.popleft()
            slot = self.windows.choose(free, prompt, PREFIX_REUSE_MIN_TOKENS)
            self._assign(slot, job)
            # Copies of this prompt (GenerationInput.n) take free slots now and wait there
            # for this job's prompt to be copied to them (copies.py).
            room = min(len(free) - 1, self.pool.room_for(self.slots, len(prompt)))
            copies = self.copies.take(job, self.pending, room)
            if copies:
                others = [s for s in free if s is not slot][: len(copies)]
                for other, copy in zip(others, copies, strict=True):
                    self._assign(other, copy)
                self.copies.hold(slot, others)

    def _assign(self, slot: Slot, job: Job) -> None:
        prompt = job.inp.prompt_tokens
        restored = self.reuse is not None and self.reuse.restore(slot, self.slots, prompt)
        keep = common_prefix(slot.kv_tokens, prompt)
        if keep == len(prompt):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        keep = self.windows.truncate(slot, keep)
        slot.job = job
        self._started[slot.seq_id] = job.admitted_at = time.monotonic()
        slot.prompt_pos = keep
        slot.next_token = None
        job.cached_tokens = keep
        params = job.inp.sampling
        slot.recent.clear()
        slot.recent.extend(prompt[-(slot.recent.maxlen or 0) :])
        slot.sampler = None if params.greedy else make_sampler(params)
        if extras.wanted(job.inp):
            job.extras = extras.Extras(job.inp, self._vocab, self._pieces)
        if job.inp.keep_special:
            job.keep_ids = self._pieces.special_ids(job.inp.keep_special)
        self.n_active += 1
        self.prompt_total += len(prompt)
        self.cached_total += keep
        if self.reuse is None:
            self.windows.begin(slot)
            return
        if restored:
            self.reuse.cache.restored_tokens += keep
        self.windows.begin(slot, self.reuse.targets(prompt))

    def _sample(self, slot: Slot, job: Job, index: int) -> int:
        """Pick the next token of ``slot`` from the logits at batch position ``index``."""
        logits = logits_row(self._ctx, index, self._n_vocab)
        apply_repetition_penalty(logits, slot.recent, job.inp.sampling.repetition_penalty)
        if job.extras is None:
            token = sample(slot.sampler, self._ctx, index, logits)
        else:
            token = job.extras.choose(slot.sampler, self._ctx, index, logits, job.token_ids)
        slot.recent.append(token)
        return token

    def _release(self, slot: Slot) -> None:
        if slot.job is not None and slot.job.extras is not None:
            slot.job.extras.close()
        self.pool.touch(slot)
        slot.job = None
        slot.next_token = None
        slot.out_index = -1
        slot.drafts.clear()
        slot.draft_rows.clear()
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        self.n_active -= 1

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.handle.cancelled.is_set():
                self._release(slot)

    def _argmax(self, index: int) -> int:
        return int(logits_row(self._ctx, index, self._n_vocab).argmax())

    def _step(self, outbox: Outbox) -> None:
        batch = self._batch
        batch.reset()
        generating = [s for s in self.slots if s.job is not None and s.next_token is not None]
        # Only steps that decode and nothing else tell the controller what drafting is worth.
        decode_only = not any(s.prefilling for s in self.slots)
        n_drafts = guesses.drafts_this_step(self._drafts, generating, decode_only, self._n_ctx_slot)
        if not self.pool.make_room(self.slots, len(generating) * (1 + n_drafts)):
            n_drafts = 0
            generating = self._fit_pool(generating, outbox)
        before = pool.snapshot(self.slots)
        for slot in generating:
            token = slot.next_token
            assert token is not None
            slot.next_token = None
            batch.add(slot, token, True)
            if n_drafts:
                proposed = drafting.propose(slot.kv_tokens, n_drafts)
                # Every sequence sends the same number of guesses: llama.cpp needed that to
                # micro-batch per-slot KV streams; kept with the shared pool (not measured).
                proposed += [token] * (n_drafts - len(proposed))
                for guess in proposed:
                    batch.add(slot, guess, True, draft=True)
        budget = batch.capacity - batch.n
        if generating:  # whole micro-batches: a nearly empty one costs a pass over each layer
            rows = -(-max(batch.n + 1, batch.capacity // SHARED_CHUNK_DIVISOR) // self._ubatch)
            budget = min(budget, rows * self._ubatch - batch.n)
        budget, remaining = self.pool.prefill_budget(self.slots, budget)
        batch.add_prompt_chunks(self.slots, budget, self.windows.pause_at)
        if batch.n == 0:
            if remaining:  # prompts that the full pool cannot take: the youngest gives way
                self._fit_pool([], outbox, force=True)
            return
        started = time.perf_counter()
        rc = batch.decode(self._ctx)
        if rc == 1:  # no room in the KV cache for this batch: nothing was stored
            logger.warning("llama_decode found no KV room for %d tokens", batch.n)
            pool.undo_step(self._memory, before, batch.touched)
            if not self.pool.evict_all_idle(self.slots):
                self._fit_pool([], outbox, force=True)
            return
        if rc != 0:
            logger.error("llama_decode returned %d", rc)
            for slot in batch.drop_touched(self.windows.clear):
                assert slot.job is not None
                outbox.append((slot.job.handle, EngineFailure()))
                self._release(slot)
            return
        self.windows.after_step(batch.touched)
        produced = 0
        for slot in self.slots:
            if slot.out_index < 0 or slot.job is None:
                continue
            index, slot.out_index = slot.out_index, -1
            if slot.draft_rows:
                verified = guesses.verify(slot, index, self._argmax, self._memory)
                if verified is None:
                    outbox.append((slot.job.handle, EngineFailure()))
                    self._release(slot)
                    continue
                tokens = verified
                self.drafted_total += len(tokens) - 1
            else:
                if self.reuse is not None and slot.job.first_token_at == 0.0:
                    self.reuse.save(slot)  # its prompt is computed: the cache may keep it
                # A source of copies hands its prompt and logits to them first (copies.py).
                self.cached_total += self.copies.fan_out(
                    slot, index, self._sample, self._on_token, outbox
                )
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

    def _fit_pool(self, generating: list[Slot], outbox: Outbox, force: bool = False) -> list[Slot]:
        """pool.fit: the youngest busy sequences end with ServerBusy until the rest fit."""

        def end(victim: Slot) -> None:
            assert victim.job is not None
            outbox.append((victim.job.handle, ServerBusy(pool.POOL_FULL, retry_after=1)))
            self._release(victim)

        return self.pool.fit(self.slots, generating, self._started, end, force=force)

    def _on_token(self, slot: Slot, token: int, outbox: Outbox) -> None:
        job = slot.job
        assert job is not None
        if not job.first_token_at:
            job.first_token_at = time.monotonic()
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop", outbox)
            return
        job.completion_tokens += 1
        job.token_ids.append(token)
        self.generated += 1
        piece = self._pieces.piece(token, special=token in job.keep_ids)
        text_start = len(job.text)
        job.text += job.decoder.decode(piece)
        if job.track is not None:
            job.track.add(token, piece, text_start, len(job.text))
        stops = job.inp.stop
        if stops:
            start = max(0, job.emitted - max(len(s) for s in stops))
            cut, stop = find_stop(job.text, stops, start)
            if cut != -1:
                job.text = job.text[:cut]
                if job.track is not None:
                    job.track.cut(cut)
                self._finish(slot, "stop", outbox, flush=False, stop_sequence=stop)
                return
        if job.completion_tokens >= job.max_tokens or self._out_of_time(slot):
            self._finish(slot, "length", outbox)
            return
        self._emit(job, len(job.text) - stop_hold(job.text, stops), outbox)
        slot.next_token = token

    def _out_of_time(self, slot: Slot) -> bool:
        """Whether the slot's job has run past max_generation_s (0: no limit); checked once
        per token, so a generation ends within one step of its limit."""
        limit = self._time_limit
        return limit > 0 and time.monotonic() - self._started[slot.seq_id] >= limit

    def _emit(self, job: Job, upto: int, outbox: Outbox, *, final: bool = False) -> None:
        tokens: tuple[TokenLogprob, ...] = ()
        if job.track is not None:  # with logprobs, chunks end at token boundaries
            upto, tokens = job.track.release(job.text, upto, final=final)
        if upto > job.emitted or tokens:
            outbox.append((job.handle, TextChunk(job.text[job.emitted : upto], tokens)))
            job.emitted = max(job.emitted, upto)

    def _finish(
        self,
        slot: Slot,
        reason: EngineFinishReason,
        outbox: Outbox,
        *,
        flush: bool = True,
        stop_sequence: str | None = None,
    ) -> None:
        job = slot.job
        assert job is not None
        if flush:  # text held back for a stop string that never came, or a partial UTF-8 tail
            job.text += job.decoder.decode(b"", final=True)
        self._emit(job, len(job.text), outbox, final=True)
        first = job.first_token_at or time.monotonic()
        outbox.append(
            (
                job.handle,
                Finished(
                    finish_reason=reason,
                    prompt_tokens=len(job.inp.prompt_tokens),
                    completion_tokens=job.completion_tokens,
                    cached_tokens=job.cached_tokens,
                    token_ids=tuple(job.token_ids),
                    logprobs=tuple(job.track.reported) if job.track is not None else (),
                    stop_sequence=stop_sequence,
                    prompt_seconds=max(0.0, first - job.admitted_at),
                    generation_seconds=time.monotonic() - first,
                    queued_seconds=max(0.0, job.admitted_at - job.handle.submitted_at),
                ),
            )
        )
        job.handle.done = True
        self._release(slot)
