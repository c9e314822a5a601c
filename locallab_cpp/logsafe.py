"""Log records that request data cannot forge: control characters escaped.

A model id, a path or a header a client sends may hold ``\\n`` or an ANSI escape; logged
as it is, it would start a line that looks like the server's own (``INFO model x
loaded``) or repaint the terminal. :func:`loggable` escapes such characters in one
string; :class:`EscapeControlCharacters`, a filter on the server's log handlers (the
CLI installs it on the root's and uvicorn's, whose access log prints the decoded request
path), escapes them in every record's message and arguments, whoever logged it.
Tracebacks keep their lines.

Prompts and generated text are never logged (no module logs request bodies).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

# C0 and C1 controls, DEL, line and paragraph separators, and the bidirectional overrides
# that make a line read differently from what it holds.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def loggable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``)."""
    return _UNSAFE.sub(_escape, text)


def _safe(value: Any) -> Any:
    return loggable(value) if isinstance(value, str) else value


class EscapeControlCharacters(logging.Filter):
    """Escapes control characters in a record's message and arguments (it never drops
    one). Arguments keep their places, so formatters that read them (uvicorn's access
    log) still work."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; always True."""
        if isinstance(record.msg, str):
            record.msg = loggable(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_safe(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _safe(v) for k, v in record.args.items()}
        return True


ESCAPE_FILTER = EscapeControlCharacters()


def install(
    logger_names: Iterable[str] = ("", "uvicorn", "uvicorn.error", "uvicorn.access"),
) -> None:
    """Add the filter to every handler of the named loggers ("" is the root); call after
    logging is configured (uvicorn configures its own loggers when its Config is made)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if ESCAPE_FILTER not in handler.filters:
                handler.addFilter(ESCAPE_FILTER)
