"""The llama.cpp embedding engine: pooled vectors (and rerank scores) of token lists.

The event-loop side checks inputs and queues them; one thread of its own (embed_loop.py)
owns the llama.cpp context and decodes the inputs of all waiting requests together. The
vocabulary is read-only, so tokenizing may happen on any thread; every call that reads the
model holds a lease (engine/lease.py), and close() frees nothing while one is held.

Pooling is the registry's ``pooling`` when set, else the GGUF's ``<arch>.pooling_type``,
else mean for an embedding model and rank for a reranker. "none" gives the last token's
vector (a causal model's summary of the whole input): the API wants one vector an input.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import llama_cpp
from llama_cpp import _internals

from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, EngineStats
from locallab_cpp.engine.lease import Leases
from locallab_cpp.engine.llama.embed_loop import EmbedLoop, EmbedRequest
from locallab_cpp.engine.llama.loading import (
    gpu_offload_supported,
    init_backend,
    physical_cores,
    release_freed_memory,
    resolve_gpu_layers,
)
from locallab_cpp.engine.llama.repack import apply_repack, resolve_repack
from locallab_cpp.engine.llama.text import Pieces
from locallab_cpp.errors import (
    EngineFailure,
    GenerationAborted,
    InvalidRequest,
    LocalLabError,
    ModelUnavailable,
    PayloadTooLarge,
)
from locallab_cpp.models.embed_sizing import EMBED_SEQ_MAX, embed_context
from locallab_cpp.models.registry import ModelSpec

POOLING_TYPES = {
    "none": llama_cpp.LLAMA_POOLING_TYPE_NONE,
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
    "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK,
}
"""Our pooling names and llama.cpp's enum (llama.h's llama_pooling_type)."""
POOLING_NAMES = {value: name for name, value in POOLING_TYPES.items()}
RERANK_TEMPLATE = "rerank"
"""The name of a GGUF's rerank template (``tokenizer.chat_template.rerank``)."""


def gguf_pooling(metadata: dict[str, str]) -> str | None:
    """The pooling the GGUF declares (``<arch>.pooling_type``), None when it has none."""
    arch = metadata.get("general.architecture", "")
    value = metadata.get(f"{arch}.pooling_type")
    try:
        return POOLING_NAMES.get(int(value)) if value is not None else None
    except ValueError:
        return None


def choose_pooling(spec: ModelSpec, metadata: dict[str, str]) -> str:
    """The registry's pooling, else the GGUF's, else mean (embedding) or rank (rerank). A
    GGUF of a chat model declares none (0): such a file pools by mean."""
    if spec.pooling:
        return spec.pooling
    declared = gguf_pooling(metadata)
    if declared and declared != "none":
        return declared
    return "rank" if spec.kind == "rerank" else "mean"


class LlamaEmbeddingEngine:
    """A GGUF model that turns token lists into pooled vectors, many inputs a batch."""

    def __init__(self, *, spec: ModelSpec, path: Path, settings: Settings) -> None:
        init_backend()
        self._leases = Leases()
        n_gpu_layers = resolve_gpu_layers(settings.n_gpu_layers)
        threads = settings.threads or physical_cores()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        # Weights are read and repacked as for a chat model (loading.py, --repack).
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        plan = resolve_repack(
            settings.repack, path, gpu_offload=n_gpu_layers > 0 and gpu_offload_supported()
        )
        self._repack = apply_repack(mparams, plan)  # held: llama.cpp keeps its pointer
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except ValueError:
            raise ModelUnavailable(
                f"llama.cpp could not load the GGUF of model '{spec.id}'; the file may be "
                "damaged or of an architecture this llama.cpp does not support."
            ) from None
        model = self._model
        metadata = model.metadata()
        self._metadata = metadata
        self._vocab = model.vocab
        self._n_vocab = model.n_vocab()
        self._pooling = choose_pooling(spec, metadata)
        self._n_ctx = embed_context(model.n_ctx_train(), settings)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self._n_ctx
        # The whole batch is one ubatch: llama.cpp pools (and a non-causal model attends
        # over) a sequence only when all of it is in one ubatch.
        cparams.n_batch = self._n_ctx
        cparams.n_ubatch = self._n_ctx
        cparams.n_seq_max = EMBED_SEQ_MAX
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.embeddings = True
        cparams.pooling_type = POOLING_TYPES[self._pooling]
        cparams.kv_unified = True  # every sequence may take the whole context
        cparams.no_perf = True
        # Without flash attention: its CPU kernel accumulates in half precision, so an
        # input's vector would depend on what else shares its batch more than through float
        # rounding alone. The attention matrix the plain path needs (context x context per
        # head) is in embed_sizing's plan.
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        try:
            self._ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
        except ValueError:
            model.close()
            raise ModelUnavailable(
                f"llama.cpp could not create an embedding context for model '{spec.id}' "
                f"({self._n_ctx} tokens); lower --n-ctx."
            ) from None
        if self._pooling == "rank":
            dims = int(llama_cpp.llama_model_n_cls_out(model.model)) or 1
        else:
            dims = int(llama_cpp.llama_model_n_embd_out(model.model)) or model.n_embd()
        self._dimensions = dims
        self._info = EngineInfo(
            model_id=spec.id,
            name=spec.display_name,
            description=spec.description,
            n_ctx=self._n_ctx,
            n_ctx_train=model.n_ctx_train(),
            n_gpu_layers=n_gpu_layers if llama_cpp.llama_supports_gpu_offload() else 0,
            parallel=EMBED_SEQ_MAX,
            size_bytes=path.stat().st_size,
            chat_format=None,
            loaded_at=time.time(),
            details=self._details(spec, settings, threads),
            max_token_bytes=Pieces(self._vocab).longest(),
        )
        self._loop = EmbedLoop(
            self._ctx.ctx,
            n_batch=self._n_ctx,
            n_seq_max=EMBED_SEQ_MAX,
            dimensions=dims,
            pooling=self._pooling,
            name=spec.id,
        )

    def _details(self, spec: ModelSpec, settings: Settings, threads: int) -> dict[str, Any]:
        metadata = self._metadata
        return {
            "kind": spec.kind,
            "pooling": self._pooling,
            "n_embd": self._dimensions,
            "architecture": metadata.get("general.architecture", ""),
            "description": self._model.desc(),
            "n_params": self._model.n_params(),
            "n_vocab": self._n_vocab,
            "threads": threads,
            "n_batch": self._n_ctx,
            "n_seq_max": EMBED_SEQ_MAX,
            "quantization": spec.quantization,
            "kv_cache_bytes": 0,
            "n_ctx_reason": "set" if settings.n_ctx else "trained context, capped for embeddings",
        }

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model (details: kind, pooling, n_embd...)."""
        return self._info

    @property
    def failed(self) -> bool:
        """Whether the embedding thread died (the engine must be closed and reopened)."""
        return self._loop.failed

    @property
    def pooling(self) -> str:
        """mean, cls, last, none or rank."""
        return self._pooling

    @property
    def dimensions(self) -> int:
        """Length of one vector (the classifier's outputs for rank pooling)."""
        return self._dimensions

    def stats(self) -> EngineStats:
        """Live counters: inputs in the batch being decoded, inputs waiting, tokens read."""
        loop = self._loop
        with loop.cond:
            queued = loop.queued()
        return EngineStats(
            active=loop.active,
            queued=queued,
            generated_tokens=0,
            prompt_tokens=loop.prompt_tokens,
            cached_prompt_tokens=0,
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text`` (the model's BOS/EOS/SEP additions with ``add_bos``, as
        llama.cpp's common tokenizer adds them); any thread may call it."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        with self._leases.hold():
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            raise EngineFailure("tokenization failed")
        return list(buf[:n])

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        """The tokens of a (query, document) pair: the GGUF's rerank template with
        ``{query}`` and ``{document}`` filled (its control tokens parsed, the texts not),
        else llama.cpp's layout ``[BOS] query [EOS] [SEP] document [EOS]``, each special
        token where the vocabulary adds it (SEP standing in for a missing EOS), the texts
        tokenized as plain text."""
        with self._leases.hold():
            template = self._model_template(RERANK_TEMPLATE)
            if template is not None:
                return self._fill_template(template, query, document)
            vocab = self._vocab
            out: list[int] = []
            bos, eos, sep = (
                llama_cpp.llama_vocab_bos(vocab),
                llama_cpp.llama_vocab_eos(vocab),
                llama_cpp.llama_vocab_sep(vocab),
            )
            eos = eos if eos >= 0 else sep  # llama.cpp's stand-in for a missing EOS
            add_bos = llama_cpp.llama_vocab_get_add_bos(vocab) and bos >= 0
            add_eos = llama_cpp.llama_vocab_get_add_eos(vocab) and eos >= 0
            add_sep = llama_cpp.llama_vocab_get_add_sep(vocab) and sep >= 0
            if add_bos:
                out.append(bos)
            out += self.tokenize(query, add_bos=False, special=False)
            if add_eos:
                out.append(eos)
            if add_sep:
                out.append(sep)
            out += self.tokenize(document, add_bos=False, special=False)
            if add_eos:
                out.append(eos)
            return out

    def _fill_template(self, template: str, query: str, document: str) -> list[int]:
        """The template's own text tokenized with its control tokens, the client's query
        and document as plain text: a document holding ``<|im_end|>`` cannot close the
        template's turn, nor a query holding ``{document}`` pull the document in twice."""
        out: list[int] = []
        for piece in re.split(r"(\{query\}|\{document\})", template):
            if piece == "{query}":
                out += self.tokenize(query, add_bos=False, special=False)
            elif piece == "{document}":
                out += self.tokenize(document, add_bos=False, special=False)
            elif piece:
                out += self.tokenize(piece, add_bos=False, special=True)
        return out

    def _model_template(self, name: str) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self._model.model, name.encode())
        return raw.decode("utf-8", errors="replace") if raw else None

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Pooled vectors (not normalized) of each token list, in input order."""
        if not inputs:
            raise InvalidRequest("Invalid request: there is nothing to embed (no inputs).")
        for index, tokens in enumerate(inputs):
            self._check(index, tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        request = EmbedRequest(inputs=[list(t) for t in inputs], loop=loop, future=future)
        with self._leases.hold():
            self._loop.queue(request)
        try:
            return await future
        finally:
            request.abandoned = True  # cancelled: the thread skips what is left of it

    def _check(self, index: int, tokens: Sequence[int]) -> None:
        if not tokens:
            raise InvalidRequest(f"Invalid request: input {index} is empty; send some text.")
        if len(tokens) > self._n_ctx:
            raise PayloadTooLarge(
                f"Input {index} is {len(tokens)} tokens; this model embeds at most "
                f"{self._n_ctx} tokens an input. Shorten it, split it, or ask to truncate it "
                "(Ollama's truncate: true)."
            )
        bad = next((t for t in tokens if not 0 <= t < self._n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"Invalid request: input {index} holds token id {bad}; this model's "
                f"vocabulary has ids 0 to {self._n_vocab - 1}."
            )

    # ----- what a generating engine does: refused with a 400 ------------------------------

    def _not_generating(self) -> InvalidRequest:
        return InvalidRequest(
            f"Invalid request: model '{self._info.model_id}' is an embedding model and "
            "generates no text; use it with POST /v1/embeddings or /api/embed, and a chat "
            "model for chat and completions."
        )

    def chat_prompt(self, *args: object, **kwargs: object) -> NoReturn:
        """Refused: an embedding model has no chat (InvalidRequest)."""
        raise self._not_generating()

    def fim_tokens(self) -> None:
        """An embedding model fills in no middle."""
        return None

    def submit(self, *args: object, **kwargs: object) -> NoReturn:
        """Refused: an embedding model generates nothing (InvalidRequest)."""
        raise self._not_generating()

    def close(self, reason: LocalLabError | None = None) -> None:
        """End waiting requests with ``reason``, stop the thread, then free the model."""
        self._leases.close()
        if self._loop.stop(reason or GenerationAborted()):
            self._ctx.close()
            self._model.close()
            release_freed_memory()
