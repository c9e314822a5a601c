"""Superseded requests: an editor's next autocomplete request cancels its previous one.

llama.vim and llama.vscode send a fill-in-the-middle request on every keystroke (or cursor
move) and only want the answer to the latest: the older one's text is for a cursor that has
moved on. Left running it would hold a slot and compute a prompt nobody reads, while the
request that matters waits behind it. So each FIM path registers its running request under
a :class:`ClientKey`; a new request under the same key *supersedes* the one there: its
generation is cancelled (the engine frees its slot at its next step) and it answers at once
with what it had, marked as superseded by its API.

"The same client" is what a request carries, since editors send no session id:

- the peer address and the ``User-Agent`` header: several editors on one machine all come
  from 127.0.0.1, and the agent tells a VS Code from a Vim (llama.vim's curl, llama.vscode's
  axios);
- the model: an editor that completes with two models is two clients;
- the API path (``/infill``, ``/v1/completions``, ``/api/generate``);
- a client tag when the client sends one: the ``X-Client-Id`` header (our own), else the
  request's own ``id_slot`` or ``client_id`` field. Two windows of the same editor on the same
  model share a key without a tag: the later keystroke wins, which is what a user typing in
  one place at a time wants; an editor that runs completions for several buffers at once
  should send a tag.

Requests that only warm the cache (``n_predict: 0``) take no part: llama.vim sends them from
a timer, and one must not cancel a completion the user is waiting for.

The registry is generic (a key and something to cancel), lives on the event loop (no locks:
every call is made from it) and is kept in the application's state (:func:`registry_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from locallab_cpp.engine.types import GenerationHandle
from locallab_cpp.errors import GenerationAborted

CLIENT_HEADER = "x-client-id"
"""The header that tells apart clients that share an address and a User-Agent."""
MAX_TAG = 200
"""Longer tags are cut: the key is held in memory while the request runs."""
STATE_KEY = "supersede"


@dataclass(frozen=True, slots=True)
class ClientKey:
    """Who sent a request, as far as superseding goes (see the module docstring)."""

    path: str
    model: str
    host: str
    agent: str
    tag: str = ""


def client_key(
    *,
    path: str,
    model: str,
    host: str | None,
    headers: Mapping[str, str],
    tag: object = None,
) -> ClientKey:
    """The key of a request: ``tag`` is the request body's own client field (``id_slot``,
    ``client_id``), used when the ``X-Client-Id`` header is absent."""
    header = headers.get(CLIENT_HEADER)
    chosen = header if header else ("" if tag is None else str(tag))
    return ClientKey(
        path=path,
        model=model,
        host=host or "",
        agent=(headers.get("user-agent") or "")[:MAX_TAG],
        tag=chosen[:MAX_TAG],
    )


class Superseded(GenerationAborted):
    """The signal that ends a superseded generation's reader (never sent to a client as it
    is: each API answers with what was generated and its own marker)."""

    default_detail = "The request was superseded by the same client's next request."


@dataclass(eq=False, slots=True)
class Running:
    """One registered request: whether it was superseded, and its generations."""

    key: ClientKey
    owner: Supersessions | None = None
    superseded: bool = False
    handles: list[GenerationHandle] = field(default_factory=list)
    on_supersede: list[Callable[[], None]] = field(default_factory=list)
    """Called once when superseded (for a path with more to stop than its handles)."""

    def attach(self, handle: GenerationHandle) -> None:
        """Follow ``handle``; cancelled (and its reader woken) at once if the request was
        superseded while its prompt was being built."""
        self.handles.append(handle)
        if self.superseded:
            _stop(handle)

    def supersede(self) -> None:
        """Cancel every generation of the request and wake their readers with
        :class:`Superseded`."""
        if self.superseded:
            return
        self.superseded = True
        for handle in self.handles:
            _stop(handle)
        for callback in self.on_supersede:
            callback()

    def finish(self) -> None:
        """The request ended (answered, failed or gone): it leaves the registry."""
        if self.owner is not None:
            self.owner.leave(self)


def _stop(handle: GenerationHandle) -> None:
    if handle.done:
        return
    handle.cancel()  # the engine drops the sequence (queued or running) at its next step
    # The engine sends nothing for a cancelled sequence: the reader is woken here.
    handle.push(Superseded())


class Supersessions:
    """Running FIM requests by client: key → the latest request under it."""

    def __init__(self) -> None:
        self._running: dict[ClientKey, Running] = {}
        self.superseded = 0
        """How many requests were superseded (a counter for tests and logs)."""

    def enter(self, key: ClientKey) -> Running:
        """Register a new request under ``key``, superseding the one there."""
        older = self._running.get(key)
        if older is not None:
            self.superseded += 1
            older.supersede()
        running = Running(key, self)
        self._running[key] = running
        return running

    def leave(self, running: Running) -> None:
        """``running`` ended: forget it, unless a newer request holds its key already."""
        if self._running.get(running.key) is running:
            del self._running[running.key]

    def __len__(self) -> int:
        return len(self._running)


def registry_of(state: Any) -> Supersessions:
    """The application's registry (made on first use; ``state`` is Litestar's app state)."""
    registry = state.get(STATE_KEY)
    if registry is None:
        registry = Supersessions()
        state[STATE_KEY] = registry
    return registry
