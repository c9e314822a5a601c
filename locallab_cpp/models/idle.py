"""Keep-alive timers: how long each model stays loaded once idle (Ollama's ``keep_alive``).

The model manager owns one :class:`IdleTimers` and an asyncio task that looks at each
resident engine every ``keep_alive_poll_s`` seconds. A model is idle when the engine has no
sequence running or queued and its token counters have not moved since the last look (so
a short request that ran between two looks still counts as work).

Every model has the server's default keep-alive (``--keep-alive``, Ollama's 5 minutes)
until a request sets its own; a pinned model (``--pin``) never unloads for idleness,
whatever a request asks. :func:`parse_duration` reads a keep-alive as Ollama writes it, for
the setting and for the Ollama API's ``keep_alive`` alike.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable

from locallab_cpp.engine.base import Resident

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_UNITS["h"] = 3600.0
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_TEXT = 64


def parse_duration(value: float | int | str | None) -> float | None:
    """Seconds a model stays loaded once idle, as Ollama reads ``keep_alive``: a number is
    seconds, a string a Go duration (``"5m"``, ``"1h30m"``, ``"300ms"``) or a plain number
    of seconds (``"300"``); None or any negative value: for ever (None); 0: at once.
    Raises ValueError for a value that is no duration."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int | float):
        return _seconds(float(value))
    text = value.strip()
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    if len(text) > _MAX_TEXT:
        raise ValueError("too long for a duration")
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total, at = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != at:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    if not body or at != len(body):
        raise ValueError(f"{text[:80]!r} is not a duration")
    return _seconds(sign * total)


def _seconds(seconds: float) -> float | None:
    if math.isnan(seconds) or (math.isinf(seconds) and seconds > 0):
        raise ValueError("not a finite duration")
    return None if seconds < 0 else seconds


REQUEST_GRACE_S = 1.0
"""A model is not unloaded within this long of a request that set its keep-alive, or of
its load: the request may not have reached the engine yet (``keep_alive: 0`` means "after
this request", not "before it")."""


class IdleTimers:
    """Each model's keep-alive and when each resident model was last busy. Event loop only."""

    def __init__(self, default_s: float | None = None, pinned: Iterable[str] = ()) -> None:
        self._default = default_s
        """Seconds a model stays loaded once idle when no request said otherwise; None:
        for ever."""
        self._pinned = frozenset(pinned)
        """Models that never unload for idleness (--pin)."""
        self._keep: dict[str, float | None] = {}
        """Each model's keep-alive set by a request (None: for ever); absent: the
        default."""
        self._last_active: dict[str, float] = {}
        """When each resident model was last seen working, or last asked for (time.time)."""
        self._seen: dict[str, tuple[int, int]] = {}
        """Each resident engine's token counters at the last look."""
        self._asked: dict[str, float] = {}
        """When a request last set a model's keep-alive or asked for it, or it was loaded."""

    def __bool__(self) -> bool:
        """Whether some model may unload for idleness (the reaper has work)."""
        return self._default is not None or any(v is not None for v in self._keep.values())

    def pinned(self, model_id: str) -> bool:
        """Whether ``model_id`` is pinned (--pin): never unloaded, for idleness or room."""
        return model_id in self._pinned

    def set(self, model_id: str, seconds: float | None, *, current: bool) -> None:
        """``seconds`` of idleness before ``model_id`` unloads (None: never); a request
        for a resident (``current``) model restarts its timer. A pinned model stays pinned."""
        self._keep[model_id] = None if seconds is None else max(0.0, float(seconds))
        self.touch(model_id, active=current)

    def touch(self, model_id: str, *, active: bool = True) -> None:
        """A request asked for ``model_id``: it is not unloaded within REQUEST_GRACE_S
        (the request has not reached the engine yet), and its idle time starts again."""
        now = time.time()
        self._asked[model_id] = now
        if active:
            self._last_active[model_id] = now

    def seconds(self, model_id: str) -> float | None:
        """The keep-alive of ``model_id``; None: it never unloads for idleness."""
        if model_id in self._pinned:
            return None
        return self._keep.get(model_id, self._default)

    def forget(self, model_id: str) -> None:
        """``model_id`` was unloaded: loaded again, it starts with the default."""
        for table in (self._keep, self._last_active, self._seen, self._asked):
            table.pop(model_id, None)

    def loaded(self, model_id: str) -> None:
        """``model_id`` was just loaded: its timer starts now."""
        self._seen.pop(model_id, None)
        self.touch(model_id)

    def recent(self, model_id: str, now: float | None = None) -> bool:
        """Whether a request asked for ``model_id`` within REQUEST_GRACE_S."""
        now = time.time() if now is None else now
        return now - self._asked.get(model_id, 0.0) < REQUEST_GRACE_S

    def last_active(self, model_id: str) -> float:
        """When ``model_id`` was last seen working or asked for (0: never)."""
        return self._last_active.get(model_id, 0.0)

    def idle_for(self, engine: Resident, now: float) -> float:
        """Seconds ``engine`` has been idle (0 while it works), updating the activity mark."""
        model_id = engine.info.model_id
        stats = engine.stats()
        counters = (stats.prompt_tokens, stats.generated_tokens)
        busy = bool(stats.active or stats.queued)
        seen = self._seen.get(model_id)
        if busy or (seen is not None and counters != seen) or model_id not in self._last_active:
            self._last_active[model_id] = now
        self._seen[model_id] = counters
        return 0.0 if busy else now - self._last_active[model_id]

    def due(self, engine: Resident) -> bool:
        """Whether ``engine`` has a keep-alive and has been idle at least that long."""
        model_id = engine.info.model_id
        seconds = self.seconds(model_id)
        if seconds is None:
            return False
        now = time.time()
        idle = self.idle_for(engine, now)
        stats = engine.stats()
        return not (stats.active or stats.queued or self.recent(model_id, now)) and idle >= seconds

    def expires_at(self, engine: Resident | None) -> float | None:
        """Unix time at which ``engine`` unloads if it stays idle; None: never. A busy
        model's timer has not started: now plus its keep-alive."""
        if engine is None:
            return None
        model_id = engine.info.model_id
        seconds = self.seconds(model_id)
        if seconds is None:
            return None
        stats = engine.stats()
        if stats.active or stats.queued:
            return time.time() + seconds
        return self._last_active.get(model_id, time.time()) + seconds
