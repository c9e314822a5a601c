"""Events the engine thread hands to requests' handles: gathered during a step, then
delivered on each handle's event loop in one call per loop."""

from __future__ import annotations

import contextlib
from typing import Any

from locallab_cpp.engine.types import Event, GenerationHandle

Outbox = list[tuple[GenerationHandle, Event]]


def _deliver(items: Outbox) -> None:
    for handle, event in items:
        handle.queue.put_nowait(event)


def flush(outbox: Outbox) -> None:
    """Deliver and clear ``outbox`` (from the engine thread: thread-safe calls only)."""
    by_loop: dict[Any, Outbox] = {}
    for item in outbox:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        # A closed loop means nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, items)
    outbox.clear()
