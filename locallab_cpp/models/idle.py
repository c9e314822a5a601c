"""Keep-alive timers: how long each model stays loaded once idle (Ollama's ``keep_alive``).

The model manager owns one :class:`IdleTimers` and an asyncio task that looks at the
current engine every ``keep_alive_poll_s`` seconds. A model is idle when the engine has no
sequence running or queued and its token counters have not moved since the last look (so
a short request that ran between two looks still counts as work).
"""

from __future__ import annotations

import time

from locallab_cpp.engine.base import Engine

REQUEST_GRACE_S = 1.0
"""A model is not unloaded within this long of a request that set its keep-alive, or of
its load: the request may not have reached the engine yet (``keep_alive: 0`` means "after
this request", not "before it")."""


class IdleTimers:
    """Each model's keep-alive and when the current one was last busy. Event loop only."""

    def __init__(self) -> None:
        self._keep: dict[str, float] = {}
        """Seconds each model stays loaded once idle; absent: for ever (the default)."""
        self._last_active = 0.0
        """When the current model was last seen working, or last asked for (time.time)."""
        self._seen: tuple[int, int] | None = None
        """The current engine's token counters at the last look."""
        self._asked = 0.0
        """When a request last set a keep-alive, or a model was loaded."""

    def __bool__(self) -> bool:
        return bool(self._keep)

    def set(self, model_id: str, seconds: float | None, *, current: bool) -> None:
        """``seconds`` of idleness before ``model_id`` unloads (None: never); a request
        for the ``current`` model restarts its timer."""
        if seconds is None:
            self._keep.pop(model_id, None)
        else:
            self._keep[model_id] = max(0.0, float(seconds))
        self._asked = time.time()
        if current:
            self._last_active = self._asked

    def seconds(self, model_id: str) -> float | None:
        """The keep-alive of ``model_id``; None: it never unloads for idleness."""
        return self._keep.get(model_id)

    def forget(self, model_id: str) -> None:
        """``model_id`` was unloaded: loaded again, it starts with "never"."""
        self._keep.pop(model_id, None)

    def loaded(self) -> None:
        """A model was just loaded: its timer starts now."""
        self._last_active, self._seen = time.time(), None
        self._asked = self._last_active

    def idle_for(self, engine: Engine, now: float) -> float:
        """Seconds ``engine`` has been idle (0 while it works), updating the activity mark."""
        stats = engine.stats()
        counters = (stats.prompt_tokens, stats.generated_tokens)
        busy = bool(stats.active or stats.queued)
        if busy or (self._seen is not None and counters != self._seen):
            self._last_active = now
        self._seen = counters
        return 0.0 if busy else now - self._last_active

    def due(self, engine: Engine) -> bool:
        """Whether ``engine`` has a keep-alive and has been idle at least that long."""
        seconds = self._keep.get(engine.info.model_id)
        if seconds is None:
            return False
        now = time.time()
        idle = self.idle_for(engine, now)
        stats = engine.stats()
        recent = now - self._asked < REQUEST_GRACE_S
        return not (stats.active or stats.queued or recent) and idle >= seconds

    def expires_at(self, engine: Engine | None) -> float | None:
        """Unix time at which ``engine`` unloads if it stays idle; None: never. A busy
        model's timer has not started: now plus its keep-alive."""
        if engine is None:
            return None
        seconds = self._keep.get(engine.info.model_id)
        if seconds is None:
            return None
        stats = engine.stats()
        if stats.active or stats.queued:
            return time.time() + seconds
        return self._last_active + seconds
