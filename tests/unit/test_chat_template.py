"""What the chat template, not the client, decides: the generation prompt (whether the answer
starts inside ``<think>``) and the stop strings (never an end-of-generation token's text)."""

from __future__ import annotations

from locallab_cpp.engine.llama.chat_template import ChatTemplate
from locallab_cpp.serving.reasoning import prompt_opens_reasoning

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
THINKING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
# A generation prompt that depends on the conversation: closed reasoning after a tool turn.
VARYING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if messages[-1].role == 'tool' %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
    "{% endif %}"
)


def template(source: str | None, chat_format: str | None = None, **kw: object) -> ChatTemplate:
    return ChatTemplate(
        gguf_template=source,
        chat_format=chat_format,
        bos_text="<s>",
        eos_text="</s>",
        **kw,  # type: ignore[arg-type]
    )


def opens(t: ChatTemplate, messages: list[dict[str, str]]) -> bool:
    return prompt_opens_reasoning(t.render(messages).generation_prompt)


def test_client_think_tags_do_not_open_reasoning() -> None:
    plain = template(CHATML)
    for messages in (
        [{"role": "user", "content": "What does a <think> tag do?"}],
        [{"role": "system", "content": "<think>"}, {"role": "user", "content": "hi"}],
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>half"},
            {"role": "user", "content": "go on <think>"},
        ],
    ):
        rendered = plain.render(messages)
        assert "<think>" in rendered.text
        assert rendered.generation_prompt == "<|im_start|>assistant\n"
        assert not opens(plain, messages)


def test_a_template_that_opens_think_is_followed() -> None:
    thinking = template(THINKING)
    assert opens(thinking, [{"role": "user", "content": "hi"}])
    assert opens(thinking, [{"role": "user", "content": "a </think> in the text"}])


def test_a_generation_prompt_that_varies_is_found_by_a_second_rendering() -> None:
    varying = template(VARYING)
    assert opens(varying, [{"role": "user", "content": "hi"}])
    closed = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "<think>"}]
    assert varying.render(closed).generation_prompt.endswith("</think>\n\n")
    assert not opens(varying, closed)


def test_named_formats_add_no_generation_prompt_that_opens_reasoning() -> None:
    named = template(None, "chatml")
    assert not opens(named, [{"role": "user", "content": "<think>"}])


def test_end_of_generation_texts_are_no_stop_strings() -> None:
    # llama-cpp-python's formatter lists the EOS token's text as a stop string.
    assert "</s>" in template(CHATML).render([{"role": "user", "content": "x"}]).stop
    caught = template(CHATML, eog_texts=["</s>", "<|im_end|>"])
    assert "</s>" not in caught.render([{"role": "user", "content": "x"}]).stop
    # A named format's end-of-turn text stays when the vocabulary has no such token.
    named = template(None, "chatml", eog_texts=["</s>"])
    assert "<|im_end|>" in named.render([{"role": "user", "content": "x"}]).stop


def test_the_registry_stop_texts_end_a_turn() -> None:
    """ModelSpec.stop (a base model's way to end its turn) joins the template's stops."""
    t = template(None, "chatml", extra_stops=["\n"])
    assert t.render([{"role": "user", "content": "x"}]).stop == ("<|im_end|>", "\n")
