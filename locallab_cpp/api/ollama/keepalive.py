"""Ollama's ``keep_alive``: how long a model stays loaded after a request, idle.

Ollama reads a number as seconds and a string as a Go duration (``"5m"``, ``"1h30m"``,
``"300ms"``, ``"1.5h"``); a plain numeric string is seconds too (the Python client sends
``"300"`` for some callers). Any negative value keeps the model loaded for ever, 0 unloads
it as soon as it is idle. A request without ``keep_alive`` changes nothing here: this
server keeps a model loaded until it is told otherwise (Ollama's own default is 5m).
"""

from __future__ import annotations

import math
import re

from locallab_cpp.errors import InvalidRequest, printable

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_UNITS["h"] = 3600.0
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_TEXT = 64


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Seconds the model stays loaded once idle: None for ever (a negative value), 0 at
    once. Raises InvalidRequest (400) for a value that is no duration."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(value)
    if isinstance(value, int | float):
        return _seconds(float(value), value)
    text = value.strip()
    try:
        return _seconds(float(text), value)
    except ValueError:
        pass
    if len(text) > _MAX_TEXT:
        raise _bad(value)
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if not body:
        raise _bad(value)
    total, at = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != at:
            raise _bad(value)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    if at != len(body):
        raise _bad(value)
    return _seconds(sign * total, value)


def _seconds(seconds: float, given: object) -> float | None:
    if math.isnan(seconds) or (math.isinf(seconds) and seconds > 0):
        raise _bad(given)
    return None if seconds < 0 else seconds


def _bad(value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid request: 'keep_alive': {printable(str(value), 80)!r} is not a duration; "
        'send seconds (300), a duration ("5m", "1h30m"), -1 (keep loaded) or 0 (unload).'
    )
