"""Request and response bodies of the LocalLab API, as msgspec Structs.

The ``Meta`` bounds are the validation rules and also appear in the OpenAPI schema at
/schema. Every optional field accepts null, which means its default; unknown fields are
ignored, so older and newer clients both work.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

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
Temperature = Annotated[
    float, Meta(ge=0.0, le=2.0, description="Randomness; 0 means greedy (default 0.7).")
]
TopP = Annotated[float, Meta(gt=0.0, le=1.0, description="Nucleus sampling mass (default 0.9).")]
TopK = Annotated[int, Meta(ge=0, le=1000, description="Top-k cut-off; 0 disables (default 80).")]
RepetitionPenalty = Annotated[
    float, Meta(gt=0.0, le=2.0, description="Penalty on repeated tokens (default 1.15).")
]
Seed = Annotated[
    int, Meta(ge=0, le=2**32 - 2, description="Same seed and request give the same output.")
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


class CurrentModel(msgspec.Struct, kw_only=True):
    """Reply to GET /models/current."""

    model_id: str
    name: str
    is_loaded: bool
    n_ctx: int
    n_gpu_layers: int
    size_bytes: int
    chat_format: str | None
    loaded_at: float
    parallel: int
    description: str = ""


class AvailableModel(msgspec.Struct, kw_only=True):
    """One entry of GET /models/available."""

    id: str
    name: str
    description: str
    size_bytes: int
    is_downloaded: bool
    is_loaded: bool
    can_load: bool
    parameters: str
    quantization: str
    source: str


class AvailableModels(msgspec.Struct, kw_only=True):
    """Reply to GET /models/available."""

    models: list[AvailableModel]
    current_model: str | None


class Health(msgspec.Struct, kw_only=True):
    """Reply to GET /health."""

    status: Literal["healthy"]
    model_loaded: bool
    model_id: str | None
