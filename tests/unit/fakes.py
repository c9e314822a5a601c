"""A fake engine for the unit tests: the Engine protocol without llama.cpp or a model.

``FakeEngine.tokenize`` splits on whitespace and maps each word to an int id; a generation
is a few text chunks (one holding a newline) that a background task on the request's event
loop pushes into the handle, then ``Finished``. Prompt-size, queue-capacity and
mid-stream-failure behaviour is configurable so the HTTP layer's error paths can be driven.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, EngineStats, FimTokens
from locallab_cpp.engine.types import (
    ChatMessage,
    ChatPrompt,
    Finished,
    GenerationHandle,
    GenerationInput,
    TextChunk,
    TokenAlternative,
    TokenLogprob,
    ToolSpec,
)
from locallab_cpp.errors import (
    ContextLengthExceeded,
    EngineFailure,
    GenerationAborted,
    LocalLabError,
    ServerBusy,
    TooManySequences,
)
from locallab_cpp.models.registry import ModelSpec

FIM_WORDS = ("<pre>", "<suf>", "<mid>", "<rep>", "<sep>")
"""The fake's FIM tokens: words of its one-id-per-word vocabulary."""

CHAT_STOP = "<|end|>"
"""The stop string the fake's chat template adds, like a real template's end-of-turn."""


class FakeEngine:
    """Implements :class:`locallab_cpp.engine.base.Engine` with canned output."""

    def __init__(
        self,
        spec: ModelSpec,
        path: Path,
        settings: Settings,
        *,
        n_ctx: int = 64,
        queue_capacity: int = 1000,
        fail_after: int | None = None,
        failure: LocalLabError | None = None,
        tokenize_error: Exception | None = None,
        gate: threading.Event | None = None,
        retry_after: int = 7,
        stagger: float = 0.0,
        fim: bool = True,
        fim_repo: bool = False,
        output: Sequence[str] | None = None,
        tool_format: str = "hermes",
    ) -> None:
        self.spec = spec
        self.path = path
        self.settings = settings
        self.n_ctx = n_ctx
        self.queue_capacity = queue_capacity
        self.fail_after = fail_after
        self.failure = failure or EngineFailure("llama_decode failed in /home/alice/llama.cpp")
        self.tokenize_error = tokenize_error
        self.gate = gate
        self.retry_after = retry_after
        self.stagger = stagger
        self.fim = fim
        self.fim_repo = fim_repo
        self.tool_format = tool_format
        """The ChatPrompt.tool_format chat_prompt reports (the model family's call format)."""
        self.output = list(output) if output is not None else None
        """Chunks every generation produces instead of the echo (a tool call in some
        family's format, a <think> block...); settable per test."""
        self.seen: list[GenerationInput] = []
        self.finished_order: list[GenerationInput] = []
        self.chat_calls: list[list[dict[str, Any]]] = []
        self.chat_tools: list[list[ToolSpec] | None] = []
        """The ``tools`` of each chat_prompt call (None: none given)."""
        self.closed_with: LocalLabError | None = None
        self.closed = False
        self.failed = False
        """Engine.failed: set by a test to play an engine whose decode thread died."""
        self._vocab: dict[str, int] = {}
        self._words: dict[int, str] = {}
        self._lock = threading.Lock()
        self._unfinished: set[GenerationHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._generated = 0
        self._prompt_total = 0
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=n_ctx,
            n_ctx_train=spec.context_length,
            n_gpu_layers=0,
            parallel=settings.parallel or 4,
            size_bytes=spec.size_bytes,
            chat_format=spec.chat_format,
            loaded_at=time.time(),
            details={
                "architecture": "fake",
                "kv_cache_bytes": 4096,
                "n_ctx_reason": "the model's trained context",
            },
        )

    # ----- Engine protocol --------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    def stats(self) -> EngineStats:
        with self._lock:
            active = len(self._unfinished)
        return EngineStats(
            active=active,
            queued=0,
            generated_tokens=self._generated,
            prompt_tokens=self._prompt_total,
            cached_prompt_tokens=0,
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """One id per word; without ``special``, a ``<marker>`` word is plain text, an id of
        its own (the word ``\\<marker>``), as a real tokenizer spells a control token out."""
        if self.tokenize_error is not None:
            raise self.tokenize_error
        ids = [1] if add_bos else []  # 1 is BOS
        for word in text.split():
            if not special and word.startswith("<"):
                word = "\\" + word
            if word not in self._vocab:
                token = len(self._vocab) + 2
                self._vocab[word] = token
                self._words[token] = word
            ids.append(self._vocab[word])
        return ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join(self._words[t] for t in tokens if t in self._words)

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
    ) -> ChatPrompt:
        self.chat_calls.append([dict(m) for m in messages])
        self.chat_tools.append(list(tools) if tools is not None else None)
        text = "".join(f"<tool> {t['function']['name']} " for t in tools or ())
        for m in messages:
            text += f"<{m['role']}> {m.get('content') or ''} "
            text += "".join(f"<call> {c['function']['name']} " for c in m.get("tool_calls") or ())
        return ChatPrompt(
            text=text + "<assistant>",
            stop=(CHAT_STOP,),
            has_bos_text=False,
            tool_format=self.tool_format,
        )

    def fim_tokens(self) -> FimTokens | None:
        """The ids of the words ``<pre>``, ``<suf>``, ``<mid>`` (and ``<rep>``, ``<sep>``
        when made with ``fim_repo=True``); None when made with ``fim=False``."""
        if not self.fim:
            return None
        ids = {w: self.tokenize(w, add_bos=False)[0] for w in FIM_WORDS}
        return FimTokens(
            pre=ids["<pre>"],
            suf=ids["<suf>"],
            mid=ids["<mid>"],
            rep=ids["<rep>"] if self.fim_repo else None,
            sep=ids["<sep>"] if self.fim_repo else None,
            bos=1,
        )

    def submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        loop = asyncio.get_running_loop()
        # An input with n > 1 is n sequences, handles in order (Engine.submit).
        inputs = [copy for inp in inputs for copy in inp.copies()]
        for inp in inputs:
            ContextLengthExceeded.check(len(inp.prompt_tokens), self.n_ctx)
        TooManySequences.check(len(inputs), self._info.parallel, self.settings.queue_size)
        with self._lock:
            if self.closed:
                raise GenerationAborted("The model is being unloaded; retry shortly.")
            if len(self._unfinished) + len(inputs) > self.queue_capacity:
                raise ServerBusy(retry_after=self.retry_after)
            handles = [GenerationHandle(loop=loop) for _ in inputs]
            self._unfinished.update(handles)
        for i, (handle, inp) in enumerate(zip(handles, inputs, strict=True)):
            self.seen.append(inp)
            # With ``stagger``, later inputs of one submit finish first.
            delay = (len(inputs) - 1 - i) * self.stagger
            task = loop.create_task(self._produce(handle, inp, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return handles

    def close(self, reason: LocalLabError | None = None) -> None:
        with self._lock:
            self.closed = True
            self.closed_with = reason
            pending, self._unfinished = self._unfinished, set()
        for handle in pending:
            handle.push(reason or GenerationAborted())

    # ----- the fake generation -----------------------------------------------------------

    def chunks_for(self, inp: GenerationInput) -> list[str]:
        """The text chunks a prompt generates: an echo of it, then a chunk with a newline."""
        if self.output is not None:
            return list(self.output)
        words = [w for w in self.detokenize(inp.prompt_tokens).split() if not w.startswith("<")]
        return ["Echo:", " " + " ".join(words), "\nline two", " end"]

    @staticmethod
    def logprobs_for(inp: GenerationInput, chunk: str) -> tuple[TokenLogprob, ...]:
        """One made-up token per chunk when logprobs are asked for: logprob -0.5, and
        ``inp.logprobs`` alternatives (the chunk itself first)."""
        if inp.logprobs is None:
            return ()
        piece = chunk.encode("utf-8")
        top = [TokenAlternative(id=7, text=chunk, piece=piece, logprob=-0.5)]
        top += [
            TokenAlternative(id=100 + k, text=f"alt{k}", piece=f"alt{k}".encode(), logprob=-2.0 - k)
            for k in range(inp.logprobs - 1)
        ]
        return (TokenLogprob(7, chunk, piece, -0.5, tuple(top[: inp.logprobs])),)

    async def _produce(self, handle: GenerationHandle, inp: GenerationInput, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self.gate is not None:
            while not self.gate.is_set():
                if self.closed or handle.cancelled.is_set():
                    self._drop(handle)
                    return
                await asyncio.sleep(0.005)
        chunks = self.chunks_for(inp)[: inp.max_tokens]
        reason = "length" if inp.max_tokens < len(self.chunks_for(inp)) else "stop"
        chunks, stop_sequence = _cut_at_stop(chunks, inp.stop)
        if stop_sequence is not None:
            reason = "stop"
        reported: list[TokenLogprob] = []
        for i, chunk in enumerate(chunks):
            await asyncio.sleep(0)
            if self.fail_after is not None and i == self.fail_after:
                self._push_last(handle, self.failure)
                return
            logprobs = self.logprobs_for(inp, chunk)
            reported.extend(logprobs)
            if handle.cancelled.is_set() or not self._push(handle, TextChunk(chunk, logprobs)):
                self._drop(handle)
                return
            self._generated += 1
        self._prompt_total += len(inp.prompt_tokens)
        self.finished_order.append(inp)
        self._push_last(
            handle,
            Finished(
                finish_reason=reason,  # type: ignore[arg-type]
                prompt_tokens=len(inp.prompt_tokens),
                completion_tokens=len(chunks),
                cached_tokens=0,
                logprobs=tuple(reported),
                stop_sequence=stop_sequence,
            ),
        )

    def _push(self, handle: GenerationHandle, event: TextChunk) -> bool:
        with self._lock:
            if handle not in self._unfinished:
                return False  # closed meanwhile: close() already pushed its reason
            handle.push(event)
            return True

    def _push_last(self, handle: GenerationHandle, event: Finished | LocalLabError) -> None:
        with self._lock:
            if handle in self._unfinished:
                self._unfinished.discard(handle)
                handle.push(event)

    def _drop(self, handle: GenerationHandle) -> None:
        with self._lock:
            self._unfinished.discard(handle)


def _cut_at_stop(chunks: list[str], stops: Sequence[str]) -> tuple[list[str], str | None]:
    """The chunks up to the earliest stop string in their text, and that string (as the
    engine cuts its text); a stop split across chunks is not looked for."""
    for i, chunk in enumerate(chunks):
        found = [(chunk.find(stop), stop) for stop in stops if stop and stop in chunk]
        if found:
            at, stop = min(found, key=lambda pair: pair[0])
            return [*chunks[:i], chunk[:at]], stop
    return chunks, None


class FakeFactory:
    """``(spec, path, settings) -> FakeEngine``; records what it opened.

    ``delay`` makes each open block (it runs in a worker thread), so loads overlap.
    Other keyword arguments are handed to every FakeEngine.
    """

    def __init__(self, *, delay: float = 0.0, **engine_kwargs: object) -> None:
        self.delay = delay
        self.engine_kwargs = engine_kwargs
        self.engines: list[FakeEngine] = []
        self.opened: list[tuple[str, Path]] = []

    def __call__(self, spec: ModelSpec, path: Path, settings: Settings) -> FakeEngine:
        if self.delay:
            time.sleep(self.delay)
        engine = FakeEngine(spec, path, settings, **self.engine_kwargs)  # type: ignore[arg-type]
        self.opened.append((spec.id, path))
        self.engines.append(engine)
        return engine

    @property
    def last(self) -> FakeEngine:
        return self.engines[-1]
