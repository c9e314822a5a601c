"""Stored responses (``store: true``), in memory and bounded: least recently used out.

A local server keeps nothing unless asked (``store`` defaults to false here, unlike
OpenAI's). A stored response keeps the conversation it ended, as input items: its input
(a previous response's conversation included) and its output, read back as input. So
``previous_response_id`` continues it with exactly the turns the model saw and wrote, and
the prompt it renders starts with the tokens the last turn computed (prompt reuse).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from locallab_cpp.api.responses.objects import OutputItem, ResponseObject
from locallab_cpp.api.responses.protocol import InputItem


def as_input(item: OutputItem) -> InputItem:
    """An output item as the input item that repeats it."""
    return msgspec.convert(msgspec.to_builtins(item), InputItem)


@dataclass(frozen=True, slots=True)
class Stored:
    response: ResponseObject
    conversation: tuple[InputItem, ...]
    """Every item up to and including the response's output."""


class ResponseStore:
    """At most ``capacity`` responses by id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Stored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response: ResponseObject, inputs: Sequence[InputItem]) -> None:
        if self.capacity <= 0:
            return
        conversation = (*inputs, *(as_input(item) for item in response.output))
        self._entries[response.id] = Stored(response, conversation)
        self._entries.move_to_end(response.id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> Stored | None:
        stored = self._entries.get(response_id)
        if stored is not None:
            self._entries.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> bool:
        return self._entries.pop(response_id, None) is not None

    def item(self, item_id: str) -> InputItem | None:
        """The item of a stored conversation with this id (for ``item_reference``)."""
        for stored in reversed(self._entries.values()):
            for item in stored.conversation:
                if item.id == item_id:
                    return item
        return None
