"""Types and small rules the settings share with the rest of the package: cache types,
repack choices, the loopback test, port and count bounds."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated, Literal, get_args

import msgspec

if TYPE_CHECKING:
    from locallab_cpp.config import Settings


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` (a bind address, or a client address from an ASGI scope) is on the
    loopback interface: 127.0.0.0/8, ::1, or 127.x written as an IPv4-mapped IPv6 address
    (::ffff:127.0.0.1, what a dual-stack socket reports for an IPv4 client).

    Anything that is not an IP address (a Unix socket's empty name, a test client's made-up
    name, "localhost") is not: without proof that a client is local, it is rate-limited.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


CacheType = Literal["f16", "q8_0", "q4_0"]
CACHE_TYPE_CHOICES: tuple[str, ...] = get_args(CacheType)
CACHE_TYPE_BYTES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes one KV-cache element takes in each cache type (ggml: q8_0 stores 32 values in 34
bytes, q4_0 in 18)."""


def cache_bytes_per_pair(settings: Settings | None) -> float:
    """Bytes one key element and one value element take together in the KV cache."""
    if settings is None:
        return 2 * CACHE_TYPE_BYTES["f16"]
    return CACHE_TYPE_BYTES[settings.cache_type_k] + CACHE_TYPE_BYTES[settings.cache_type_v]


RepackSetting = Literal["auto", "on", "no-amx", "off"]
REPACK_CHOICES: tuple[str, ...] = get_args(RepackSetting)

_ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#@]+/?")
"""A web origin as a user writes it; a trailing slash is tolerated and ignored."""

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
