"""The chat page's static files, shipped inside the package (no CDN, no build step).

Only the files named in :data:`FILES` are ever served: a request names one of them, and
its name is looked up in this fixed table, never joined onto a path. The API key check
lets :data:`PAGE_PATHS` through without a key: they are the same for everyone and carry
no secret (the page asks for the key when an API call answers 401).
"""

from __future__ import annotations

from importlib import resources

STATIC_PREFIX = "/static/"
"""Where the page's files are served; ``/`` serves index.html."""

FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "store.js": "text/javascript; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""Every file of the page, by name, with its content type."""

PAGE_PATHS = frozenset({"/", *(STATIC_PREFIX + name for name in FILES)})
"""The exact paths of the page: served without an API key."""


def read(name: str) -> bytes | None:
    """The bytes of the page's file ``name``, or None when it is not one of :data:`FILES`."""
    if name not in FILES:
        return None
    return resources.files(__package__).joinpath("static", name).read_bytes()


def total_bytes() -> int:
    """The size of the whole page: every file in :data:`FILES` (docs/web.md states it)."""
    return sum(len(read(name) or b"") for name in FILES)
