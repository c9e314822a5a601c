"""Which API family a request path belongs to, for the request metrics' ``api`` label.

The families are the APIs' own names (api/__init__.py, ``Api.name``) found by longest
prefix, as the error formats are, with two refinements: the embeddings routes are a family
of their own (they are not chat, whichever API's path they sit under), and a root path no
LocalLab route answers is "other", so a scanner probing random paths does not swell the
LocalLab series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EMBEDDINGS_PATHS = frozenset({"/v1/embeddings", "/embeddings"})
"""The OpenAI-style embeddings routes (Ollama's /api/embed is the Ollama API's)."""


@dataclass(frozen=True, slots=True)
class ApiFamilies:
    """Path -> family name."""

    prefixes: tuple[tuple[str, str], ...]
    """(prefix, family) of every API but the root's, longest prefix first."""
    root: str
    """The family of paths under no other prefix that a root route answers."""
    root_segments: frozenset[str]
    """First path segments of the root API's routes ("health", "models", "")."""
    exact: tuple[tuple[str, str], ...] = ()
    """Paths with a family of their own (a page mounted at the root by another API)."""

    @classmethod
    def build(
        cls,
        apis: Iterable[tuple[str, str]],
        route_paths: Iterable[str],
        exact: Sequence[tuple[str, str]] = (),
    ) -> ApiFamilies:
        """From (name, prefix) pairs (the root API's prefix is "/") and the app's route
        paths."""
        named = list(apis)
        roots = [name for name, prefix in named if prefix.strip("/") == ""]
        others = sorted(
            ((prefix.rstrip("/"), name) for name, prefix in named if prefix.strip("/")),
            key=lambda pair: -len(pair[0]),
        )
        families = cls(tuple(others), roots[0] if roots else "other", frozenset(), tuple(exact))
        segments = {_segment(path) for path in route_paths if families._prefixed(path) is None}
        return cls(families.prefixes, families.root, frozenset(segments), tuple(exact))

    def _prefixed(self, path: str) -> str | None:
        for prefix, name in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return name
        return None

    def of(self, path: str) -> str:
        """The family of ``path`` (already normalized: see http/middleware.normalize_path)."""
        if path in EMBEDDINGS_PATHS:
            return "embeddings"
        for exact, name in self.exact:
            if path == exact:
                return name
        prefixed = self._prefixed(path)
        if prefixed is not None:
            return prefixed
        return self.root if _segment(path) in self.root_segments else "other"


def _segment(path: str) -> str:
    """The first segment of a path: "models" for /models/load, "" for /."""
    return path.lstrip("/").split("/", 1)[0]


UNKNOWN = ApiFamilies((), "other", frozenset())
"""Every path is "other" (a stack built without the APIs, in tests)."""
