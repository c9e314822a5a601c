"""Use counts on an engine: its memory is freed only once no thread is using it.

Tokenizing reads the model's vocabulary, and long prompts are tokenized in worker threads
(serving.generation.tokenize) while the event loop goes on; an unload or a model switch
closing the engine meanwhile would free the vocabulary under the tokenizer (a crash, not an
exception). Every call that reaches into the model holds a lease for its duration; closing
refuses new leases and waits for the held ones to end before anything is freed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from locallab_cpp.errors import GenerationAborted

CLOSING_DETAIL = "The model is being unloaded; retry shortly."


class Leases:
    """Counts the threads inside an engine and lets it close only when there are none."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = 0
        self._closing = False

    @property
    def held(self) -> int:
        """Leases held now."""
        return self._held

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called: no new lease is granted."""
        return self._closing

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Use the engine for the ``with`` block; raises GenerationAborted (the request may
        be retried) once the engine is closing."""
        with self._cond:
            if self._closing:
                raise GenerationAborted(CLOSING_DETAIL, retry_after=1)
            self._held += 1
        try:
            yield
        finally:
            with self._cond:
                self._held -= 1
                if self._held == 0:
                    self._cond.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new leases and wait until the held ones end (blocking: a worker thread).

        Returns False if ``timeout`` passed first. Calling it again waits again.
        """
        with self._cond:
            self._closing = True
            return self._cond.wait_for(lambda: self._held == 0, timeout)
