"""GET / (the chat page) and GET /static/{name} (its scripts, styles and icon).

The page is plain files from the package (:mod:`locallab_cpp.web`): no template, nothing
of the request reaches the file system, since a name is looked up in a fixed table. Every
answer carries a Content-Security-Policy that lets the page load only its own files and
talk only to this server, so even a model's output that slipped past the page's escaping
could run no script.
"""

from __future__ import annotations

from litestar import Response, get, head
from litestar.params import FromPath

from locallab_cpp import web
from locallab_cpp.api import Api
from locallab_cpp.api.locallab.errors import LOCALLAB_ERRORS
from locallab_cpp.errors import NotFound

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""Only this server's own files and API; no inline script or style, no framing."""

# The page's files change only with the package: a browser may keep them a short while but
# must ask again after an upgrade, so "no-cache" (revalidate every time) for the page and a
# short max-age for the rest would both work; revalidating everything keeps it simple.
CACHE_CONTROL = "no-cache"


def security_headers() -> dict[str, str]:
    """The headers every answer of the page carries."""
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": CACHE_CONTROL,
    }


def _file(name: str) -> Response[bytes]:
    body = web.read(name)
    if body is None:
        raise NotFound(f"No such file of the chat page: {name[:80]!r}.")
    return Response(body, media_type=web.FILES[name], headers=security_headers())


@get("/", summary="The chat page", include_in_schema=False, sync_to_thread=False)
def index() -> Response[bytes]:
    """index.html: a chat with the server's models in the browser."""
    return _file("index.html")


@head("/", summary="The chat page's headers", include_in_schema=False, sync_to_thread=False)
def index_head() -> Response[None]:
    """What GET / would answer, without the body: clients probe the root with HEAD to see
    that a server is there (Claude Code does)."""
    return Response(None, media_type=web.FILES["index.html"], headers=security_headers())


@get(
    "/{name:str}", summary="A file of the chat page", include_in_schema=False, sync_to_thread=False
)
def static_file(name: FromPath[str]) -> Response[bytes]:
    """One of the page's files by name; any other name is a 404."""
    return _file(name)


WEB_API = Api(
    name="web",
    prefix=web.STATIC_PREFIX.rstrip("/"),
    routes=(static_file,),
    errors=LOCALLAB_ERRORS,
    root_routes=(index, index_head),
)
"""The chat page: ``/`` and ``/static/{name}``, answered in the LocalLab error format."""
