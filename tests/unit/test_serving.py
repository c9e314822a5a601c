"""The serving core every API shares: tokenizing, the context check, usage sums, and
LocalLab's streamed payloads over it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from locallab_cpp.api.locallab.errors import status_of
from locallab_cpp.engine.base import EngineInfo
from locallab_cpp.engine.types import (
    ChatPrompt,
    Completion,
    GenerationHandle,
    SamplingParams,
    TextChunk,
)
from locallab_cpp.errors import ContextLengthExceeded, ErrorKind, LocalLabError, PayloadTooLarge
from locallab_cpp.serving import generation as serving
from locallab_cpp.serving.streaming import text_chunks


class StubEngine:
    """Enough of an Engine for the serving helpers: one token per character."""

    def __init__(self, n_ctx: int = 8, *, bos_text: bool = False) -> None:
        self.info = EngineInfo("m", "M", "", n_ctx, n_ctx, 0, 1, 0, None, 0.0)
        self.bos_text = bos_text
        self.threads: list[str] = []
        self.submitted: list[Any] = []

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        self.threads.append(threading.current_thread().name)
        return ([1] if add_bos else []) + [ord(c) for c in text]

    def chat_prompt(
        self, messages: Sequence[Mapping[str, str]], *, tools: object = None
    ) -> ChatPrompt:
        text = "".join(m["content"] for m in messages)
        return ChatPrompt(text=text, stop=("<end>",), has_bos_text=self.bos_text)

    def submit(self, inputs: Sequence[Any]) -> list[GenerationHandle]:
        self.submitted.extend(inputs)
        return []


def test_long_prompts_are_tokenized_off_the_event_loop() -> None:
    engine = StubEngine()

    async def main() -> None:
        assert await serving.tokenize(engine, "ab") == (1, 97, 98)
        long = "x" * (serving.OFFLOOP_TOKENIZE_CHARS + 1)
        assert len(await serving.tokenize(engine, long, add_bos=False)) == len(long)

    asyncio.run(main())
    assert engine.threads[0] == threading.main_thread().name
    assert engine.threads[1] != threading.main_thread().name


@pytest.mark.parametrize(("bos_text", "first"), [(False, 1), (True, ord("h"))])
def test_chat_tokens_add_bos_unless_the_template_wrote_it(bos_text: bool, first: int) -> None:
    engine = StubEngine(bos_text=bos_text)
    chat = asyncio.run(serving.chat_tokens(engine, [{"role": "user", "content": "hi"}]))
    assert chat.tokens[0] == first and chat.stop == ("<end>",)


def test_context_check_refuses_the_whole_batch() -> None:
    engine = StubEngine(n_ctx=8)
    with pytest.raises(ContextLengthExceeded) as info:
        serving.submit(engine, serving.inputs_for([(1, 2), tuple(range(8))], SamplingParams(), 4))
    assert engine.submitted == []
    error = info.value
    assert isinstance(error, PayloadTooLarge) and error.kind is ErrorKind.CONTEXT_LENGTH
    assert status_of(error) == 413
    assert "8 tokens" in error.detail and "--n-ctx" in error.detail
    with pytest.raises(ContextLengthExceeded, match="empty"):
        serving.check_fits(engine, [()])
    serving.submit(engine, serving.inputs_for([tuple(range(7))], SamplingParams(), 4, ("x",)))
    [inp] = engine.submitted
    assert (inp.max_tokens, inp.stop) == (4, ("x",))


def test_usage_sums_every_completion() -> None:
    done = [Completion("a", "stop", 3, 2, 1), Completion("b", "length", 4, 5, 0)]
    usage = serving.usage_of(done)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (7, 7, 1)
    assert usage.total_tokens == 14


def test_text_chunks_turn_unexpected_errors_into_a_plain_detail() -> None:
    class Exploding:
        cancelled = False

        async def events(self):  # type: ignore[no-untyped-def]
            yield TextChunk("a")
            yield TextChunk("")
            raise RuntimeError("/home/alice boom")

        def cancel(self) -> None:
            self.cancelled = True

    handle = Exploding()

    async def main() -> list[str]:
        return [text async for text in text_chunks(handle)]  # type: ignore[arg-type]

    with pytest.raises(LocalLabError) as info:
        asyncio.run(main())
    assert type(info.value) is LocalLabError and info.value.kind is ErrorKind.INTERNAL
    assert "alice" not in str(info.value) and "boom" not in str(info.value)
    assert handle.cancelled
