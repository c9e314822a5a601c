"""What a request's model name means: a registry id, ``id:tag`` or a --model-alias."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from locallab_cpp.errors import ModelNotFound
from locallab_cpp.models.registry import Registry


def untagged(registry: Registry, name: str) -> str | None:
    """The registry id of an Ollama-style ``id:tag`` name: ``:latest`` or the entry's
    quantization (``gemma-3-270m:q4_k_m``) as the tag; None if ``name`` is not one."""
    model_id, colon, tag = name.rpartition(":")
    if not colon or model_id not in registry:
        return None
    spec = registry.get(model_id)
    if tag.lower() in ("latest", spec.quantization.lower()):
        return model_id
    return None


def resolve(registry: Registry, aliases: Sequence[str], name: str | None) -> str | None:
    """The registry id a request's model name means: the id itself or ``id:tag``
    (:func:`untagged`), else the model of the first alias (NAME=MODEL, NAME a glob) whose
    NAME matches; None (the default model) for any other name. An alias whose MODEL the
    registry lacks is ModelNotFound."""
    if not name:
        return None
    if name in registry:
        return name
    tagged = untagged(registry, name)
    if tagged is not None:
        return tagged
    for alias in aliases:
        pattern, _, target = alias.partition("=")
        if fnmatch.fnmatchcase(name, pattern.strip()):
            target = target.strip()
            if target not in registry:
                raise ModelNotFound(target)
            return target
    return None
