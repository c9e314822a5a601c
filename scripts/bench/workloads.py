"""The prompts of the standing benchmark: story openers, filler text, a chat."""

from __future__ import annotations

from collections.abc import Callable

from bench.config import tag

# Story openers: distinct prompts for concurrent clients (opener 0 is "the short prompt").
OPENERS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "In the morning the train left the station slowly, and the passengers",
    "Scientists have long wondered why the ocean is salty. The answer is that",
    "My grandmother kept a garden behind her house where she grew",
    "The recipe for a good bread is simple: flour, water, salt and",
    "When the storm reached the mountains, the climbers decided to",
    "The city library opened its doors for the first time in 1902, and",
)

# Filler sentences for the long prompts (the ~600-token prompt and the ~500-token system).
SENTENCES = (
    "The river runs through the valley and feeds the fields of wheat and barley.",
    "Every spring the farmers repair the old stone walls that mark their land.",
    "Merchants from distant towns arrive with cloth, spices and iron tools.",
    "The council meets in the hall beside the market square once a month.",
    "Children learn to read from the teacher who lives above the bakery.",
    "In winter the roads are covered with snow and the village is quiet.",
    "A small bridge of wooden planks crosses the stream near the mill.",
    "The blacksmith shapes horseshoes, nails and hinges for the whole district.",
    "Travellers often stop at the inn to rest their horses and share news.",
    "The harvest festival lasts three days, with music, dancing and games.",
    "Old records describe a flood that destroyed the lower houses long ago.",
    "The shepherd counts his flock each evening before closing the gate.",
)

CHAT_USER_1 = "Using the notes above, describe the village in one sentence."
CHAT_USER_2 = "Now name three things a traveller could buy at the market."


# ----- prompts -------------------------------------------------------------------------


def build_body(target_tokens: int, count: Callable[[str], int]) -> str:
    """Filler text of about ``target_tokens`` tokens (measured with the model's tokenizer)."""
    parts: list[str] = []
    i = 0
    while True:
        parts.append(f"Note {i + 1}: {SENTENCES[i % len(SENTENCES)]}")
        i += 1
        if count(" ".join(parts)) >= target_tokens:
            return " ".join(parts)


def long_prompt(body: str) -> str:
    return f"{tag()} {body}\nSummary:"


def short_prompt(i: int) -> str:
    return f"{tag()} {OPENERS[i % len(OPENERS)]}"


def chat_conversation(system_body: str, first_char: str, answer: str | None) -> list[dict]:
    messages = [
        {"role": "system", "content": f"{first_char}{system_body}"},
        {"role": "user", "content": CHAT_USER_1},
    ]
    if answer is not None:
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": CHAT_USER_2},
        ]
    return messages
