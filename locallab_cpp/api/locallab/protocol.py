"""Request and response bodies of the LocalLab API, as msgspec Structs.

The ``Meta`` bounds are the validation rules and also appear in the OpenAPI schema at
/schema. Every optional field accepts null, which means its default; unknown fields are
ignored, so older and newer clients both work.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from locallab_cpp.api.locallab.residents import ResidentModel

# Defaults of the reference (decisions.md, "Generation parameters").
DEFAULT_MAX_LENGTH = 8192
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
DEFAULT_TOP_K = 80
DEFAULT_REPETITION_PENALTY = 1.15
DEFAULT_DO_SAMPLE = True

MAX_STOP_STRINGS = 8
MAX_BATCH_PROMPTS = 64
MAX_MESSAGES = 1024

MaxLength = Annotated[int, Meta(ge=1, le=16384, description="New tokens at most (default 8192).")]
# Litestar leaves bounds of 0 out of the OpenAPI schema (it skips falsy values), so they
# are repeated in extra_json_schema for /schema to show them.
_MIN_ZERO = {"extra": {"minimum": 0}}
Temperature = Annotated[
    float,
    Meta(
        ge=0.0,
        le=2.0,
        description="Randomness; 0 means greedy (default 0.7).",
        extra_json_schema=_MIN_ZERO,
    ),
]
TopP = Annotated[
    float,
    Meta(
        gt=0.0,
        le=1.0,
        description="Nucleus sampling mass (default 0.9).",
        extra_json_schema={"extra": {"exclusiveMinimum": 0}},
    ),
]
TopK = Annotated[
    int,
    Meta(
        ge=0,
        le=1000,
        description="Top-k cut-off; 0 disables (default 80).",
        extra_json_schema=_MIN_ZERO,
    ),
]
RepetitionPenalty = Annotated[
    float,
    Meta(
        gt=0.0,
        le=2.0,
        description="Penalty on repeated tokens (default 1.15).",
        extra_json_schema={"extra": {"exclusiveMinimum": 0}},
    ),
]
Seed = Annotated[
    int,
    Meta(
        ge=0,
        le=2**32 - 2,
        description="Same seed and request give the same output.",
        extra_json_schema=_MIN_ZERO,
    ),
]
StopString = Annotated[str, Meta(min_length=1, max_length=256)]
ModelId = Annotated[str, Meta(min_length=1, max_length=200)]
Prompt = Annotated[str, Meta(min_length=1, description="Text to continue.")]


class GenerationParams(msgspec.Struct, kw_only=True):
    """Fields shared by /generate, /chat and /generate/batch. Null means the default."""

    model_id: ModelId | None = None
    max_length: MaxLength | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    repetition_penalty: RepetitionPenalty | None = None
    do_sample: bool | None = None
    seed: Seed | None = None
    stop: StopString | Annotated[list[StopString], Meta(max_length=MAX_STOP_STRINGS)] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple, whichever form the client sent."""
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,)
        return tuple(self.stop)


class GenerateRequest(GenerationParams, kw_only=True):
    """POST /generate."""

    prompt: Prompt
    stream: bool | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(GenerationParams, kw_only=True):
    """POST /chat."""

    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = None


class BatchRequest(GenerationParams, kw_only=True):
    """POST /generate/batch."""

    prompts: Annotated[list[Prompt], Meta(min_length=1, max_length=MAX_BATCH_PROMPTS)]


class LoadModelRequest(msgspec.Struct, kw_only=True):
    """POST /models/load."""

    model_id: ModelId


class Usage(msgspec.Struct, kw_only=True):
    """Real token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int = 0
    """Prompt tokens that were already in a slot's KV cache and were not computed again."""


FinishReason = Literal["stop", "length"]


class GenerateResponse(msgspec.Struct, kw_only=True):
    """Reply to POST /generate."""

    response: str
    text: str
    model: str
    finish_reason: FinishReason
    usage: Usage


class AssistantMessage(msgspec.Struct, kw_only=True):
    """The generated chat turn."""

    role: Literal["assistant"]
    content: str


class ChatChoice(msgspec.Struct, kw_only=True):
    """One chat completion choice (always one)."""

    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class ChatResponse(msgspec.Struct, kw_only=True):
    """Reply to POST /chat."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class BatchResponse(msgspec.Struct, kw_only=True):
    """Reply to POST /generate/batch, in the order of the prompts."""

    responses: list[str]
    model: str
    finish_reasons: list[FinishReason]
    usage: Usage


class StatusResponse(msgspec.Struct, kw_only=True):
    """Reply to model load and unload."""

    status: Literal["success"]
    message: str
    model_id: str | None = None


LoadPhase = Literal["idle", "downloading", "verifying", "loading", "ready", "failed"]


class LoadProgressBody(msgspec.Struct, kw_only=True):
    """A model load: under way (downloading, verifying, loading), or how the last one ended.

    Byte counts are those of the current phase: the download, then the sha256 check.
    """

    loading: bool
    """Whether a load is under way now."""
    model_id: str | None
    """The model being (or last) loaded; null when none ever was."""
    state: LoadPhase
    bytes_done: int
    bytes_total: int
    """0 while the size is not known yet."""
    percent: float | None
    started_at: float | None
    elapsed_s: float | None
    detail: str | None = None
    """Why the last load failed."""


class CurrentModel(msgspec.Struct, kw_only=True):
    """Reply to GET /models/current.

    While no model is loaded but one is loading, ``is_loaded`` is false, ``model_id`` names
    the model on its way and ``loading`` says how far it got; the engine fields are null.
    """

    model_id: str
    name: str
    is_loaded: bool
    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    size_bytes: int | None = None
    chat_format: str | None = None
    loaded_at: float | None = None
    parallel: int | None = None
    description: str = ""
    loading: LoadProgressBody | None = None
    """A load under way (of this or another model), if any."""
    resident: list[ResidentModel] = msgspec.field(default_factory=list)
    """Every model held in memory (this one among them), the most recently used first."""


class AvailableModel(msgspec.Struct, kw_only=True):
    """One entry of GET /models/available."""

    id: str
    name: str
    description: str
    size_bytes: int
    """Size of the GGUF: on disk when downloaded, else the registry's figure."""
    is_downloaded: bool
    is_loaded: bool
    can_load: bool
    """Whether the machine's available memory holds the file, its KV cache and buffers."""
    parameters: str
    quantization: str
    source: str
    """Where the GGUF comes from: package, file or hub."""
    size_on_disk_bytes: int = 0
    estimated_memory_bytes: int = 0
    """File + KV cache at the configured context and parallel slots + buffers."""
    context_length: int = 0
    repo: str | None = None
    file: str | None = None
    progress: LoadProgressBody | None = None
    """Set on the entry being downloaded, verified or loaded."""


class AvailableModels(msgspec.Struct, kw_only=True):
    """Reply to GET /models/available."""

    models: list[AvailableModel]
    current_model: str | None
    available_memory_bytes: int = 0
    loading: LoadProgressBody | None = None


class Health(msgspec.Struct, kw_only=True):
    """Reply to GET /health."""

    status: Literal["healthy", "degraded"]
    """"degraded" while the loaded model's engine has failed (model_loaded is then false and
    model_id names it); the next request or load opens it again."""
    model_loaded: bool
    model_id: str | None
    slots_idle: int = 0
    """Generation slots without a sequence, summed over the resident chat models (as
    llama-server's /health names them); 0 when none is resident."""
    slots_processing: int = 0
    """Generation slots decoding a sequence now, summed over the resident chat models."""


class MemoryInfo(msgspec.Struct, kw_only=True):
    """Machine and process memory."""

    total_bytes: int
    available_bytes: int
    used_percent: float
    process_rss_bytes: int
    """Resident memory of this server process."""


class GpuInfo(msgspec.Struct, kw_only=True):
    """GPU offload as llama.cpp was built and is used."""

    available: bool
    """llama.cpp was built with GPU offload (Metal, CUDA...)."""
    backends: list[str]
    backend_in_use: str
    """CUDA, Metal... where the loaded model has layers offloaded, else CPU."""


class CpuInfo(msgspec.Struct, kw_only=True):
    """The processor."""

    model: str
    arch: str
    physical_cores: int
    logical_cores: int
    flags: list[str]
    """Instruction sets llama.cpp's kernels use (AVX2, AVX512, NEON...)."""


class LlamaCppInfo(msgspec.Struct, kw_only=True):
    """The llama.cpp build."""

    llama_cpp_python_version: str
    system_info: str
    cpu_features: list[str]
    gpu_offload_supported: bool
    gpu_backends: list[str]
    backend: str


class RpcDevice(msgspec.Struct, kw_only=True):
    """A device of an RPC worker, as llama.cpp lists it."""

    name: str
    description: str
    memory_free_bytes: int
    memory_total_bytes: int


class RpcPlacement(msgspec.Struct, kw_only=True):
    """Where a model's layers went when it uses RPC workers (docs/rpc.md)."""

    workers: list[str]
    devices: list[RpcDevice]
    layers: dict[str, str]
    """Device name -> its layers (e.g. "0-9"), from llama.cpp's load log; CPU: this host."""


class ActiveModel(msgspec.Struct, kw_only=True):
    """The loaded model and its engine's counters."""

    model_id: str
    name: str
    n_ctx: int
    n_ctx_train: int
    n_gpu_layers: int
    parallel: int
    size_bytes: int
    chat_format: str | None
    loaded_at: float
    architecture: str
    description: str
    n_params: int
    n_vocab: int
    threads: int
    n_batch: int
    quantization: str
    kv_cache_bytes: int
    """Size of the KV cache all slots share, in its key and value formats: the pool in the
    full-attention layers, a window per slot in sliding-window layers, and the window
    checkpoints' allowance."""
    kv_pool_tokens: int = 0
    """Token cells of that pool (--kv-pool-tokens, or what the auto choice gave)."""
    cache_type_k: str = "f16"
    """Number format of the cached keys (--cache-type-k)."""
    cache_type_v: str = "f16"
    """Number format of the cached values (--cache-type-v)."""
    sliding_window: int = 0
    """Tokens of the attention window that sliding-window layers keep per sequence (0: the
    model has none, or a request's context fits in one)."""
    repack: str = "on"
    """How llama.cpp may repack the weights (--repack): on, no-amx (CPU_REPACK only) or off."""
    repack_reason: str = ""
    """Why that was chosen (the CPU's AMX, the setting, GPU offload)."""
    n_ctx_reason: str = ""
    """How n_ctx was chosen: "the model's trained context", "shrunk from 32768 to fit 3.1
    GiB available", "set" (--n-ctx)..."""
    active_sequences: int
    queued_sequences: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    drafted_tokens: int
    """Generated tokens that came from verified prompt-lookup guesses."""
    evicted_tokens: int = 0
    """Cached prompt tokens of idle slots dropped to make room in the KV pool."""
    prompt_cache: dict[str, int] | None = None
    """The prompt cache beyond the slots: entries and bytes in memory and its budget, hits
    from memory and from disk, tokens restored, files and bytes on disk; null when off."""
    rpc: RpcPlacement | None = None
    """RPC workers and where the layers went; null without workers."""


class SystemInfo(msgspec.Struct, kw_only=True):
    """Reply to GET /system/info: LocalLab's keys and llama.cpp's details."""

    cpu_usage: float
    memory_usage: float
    memory: MemoryInfo
    gpu_info: GpuInfo
    active_model: ActiveModel | None
    uptime: float
    """Seconds since the server started."""
    request_count: int
    cpu: CpuInfo
    llama_cpp: LlamaCppInfo
    loading: str | None
    """Id of a model being loaded, if any."""
    resident_models: list[ResidentModel] = msgspec.field(default_factory=list)
    """Every model held in memory, the most recently used first."""
