"""Ollama's ``keep_alive``: how long a model stays loaded after a request, idle.

Ollama reads a number as seconds and a string as a Go duration (``"5m"``, ``"1h30m"``,
``"300ms"``, ``"1.5h"``); a plain numeric string is seconds too (the Python client sends
``"300"`` for some callers). Any negative value keeps the model loaded for ever, 0 unloads
it as soon as it is idle. The parsing is models/idle.py's (the ``--keep-alive`` setting
reads the same forms). A request without ``keep_alive`` changes nothing here: the model
keeps its current keep-alive (the server's ``--keep-alive``, 5m by default, unless an
earlier request set another).
"""

from __future__ import annotations

from locallab_cpp.errors import InvalidRequest, printable
from locallab_cpp.models.idle import parse_duration


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Seconds the model stays loaded once idle: None for ever (a negative value), 0 at
    once. Raises InvalidRequest (400) for a value that is no duration."""
    try:
        return parse_duration(value)
    except ValueError:
        raise _bad(value) from None


def _bad(value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid request: 'keep_alive': {printable(str(value), 80)!r} is not a duration; "
        'send seconds (300), a duration ("5m", "1h30m"), -1 (keep loaded) or 0 (unload).'
    )
