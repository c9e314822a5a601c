"""The defaults fit the machine (issue 12): the real server on the embedded model loads at
the default settings within a memory cap, logs the plan it chose, and its resident memory
stays within the cap while every slot is busy.

The cap scales a 16 GB laptop down to the embedded model: such a laptop has about 12 GiB
available (LAPTOP_AVAILABLE), and the embedded model gets the same memory for each byte
of its weights as Mistral 7B, the registry's largest model, gets there (about 700 MiB).
A tighter cap makes the plan shrink the context. The cap is LOCALLAB_MEMORY_LIMIT, which
the plan (models/sizing.py) takes as the memory available when the machine has more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from it_support import ServerProcess, peak_rss

from locallab_cpp.config import load_settings
from locallab_cpp.models import sizing
from locallab_cpp.models.registry import Registry

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
LAPTOP_AVAILABLE = 12 * 1024**3
"""What a 16 GiB laptop has available with its system, a browser and an editor running."""
ROUNDS = 2
"""Rounds of one request per slot: each slot then holds CHECKPOINTS_PER_SLOT windows."""


def _laptop_cap() -> int:
    registry = Registry.load(None)
    embedded = registry.get("gemma-3-270m").size_bytes
    mistral = registry.get("mistral-7b-instruct-v0.3").size_bytes
    return LAPTOP_AVAILABLE * embedded // mistral


def _prompt(index: int, numbers: int) -> str:
    """A prompt of its own for each request (nothing to reuse): a count to go on with."""
    start = 1000 * (index + 1) + 7 * index
    return ", ".join(str(n) for n in range(start, start + numbers)) + ","


async def _busy(url: str, slots: int, numbers: int) -> list[int]:
    """ROUNDS times one request per slot at once; the prompt tokens of each."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(index: int) -> int:
            body = {"prompt": _prompt(index, numbers), "max_length": 16, "do_sample": False}
            r = await client.post("/generate", json=body)
            assert r.status_code == 200, r.text
            return int(r.json()["usage"]["prompt_tokens"])

        tokens: list[int] = []
        for round_no in range(ROUNDS):
            tokens += await asyncio.gather(*(one(round_no * slots + i) for i in range(slots)))
        return tokens


@pytest.mark.parametrize(
    ("case", "cap"),
    [("16 GB laptop, scaled", _laptop_cap()), ("tight", 560 * MIB)],
)
def test_the_embedded_model_loads_at_the_defaults_within_a_memory_cap(
    server_factory: Callable[..., ServerProcess], case: str, cap: int
) -> None:
    registry = Registry.load(None)
    spec = registry.get("gemma-3-270m")
    path = registry.ensure_local(spec)
    expected = sizing.plan(spec, load_settings({}), cap, path.stat().st_size)
    assert expected.fits, expected.reason
    assert expected.n_ctx_reason.startswith("shrunk from 32768 to "), expected.reason
    if case != "tight":  # an agent's 19,000-token prompt still fits, with every slot
        assert expected.n_ctx_slot > 20000 and expected.parallel == 4, expected.reason

    srv = server_factory(env={sizing.MEMORY_LIMIT_ENV: str(cap)})
    # The plan line, word for word what the estimate says for this cap.
    assert f"model gemma-3-270m: {expected.reason}" in srv.output(), srv.output()[-3000:]
    assert f"of {cap // MIB} MB available" in expected.reason

    # Every slot busy, with prompts longer than the window where the pool has room for them
    # (each prompt then leaves a window checkpoint), for ROUNDS rounds.
    numbers = min(100, expected.pool_tokens // expected.parallel // 7)
    tokens = asyncio.run(_busy(srv.base_url, expected.parallel, numbers))
    assert len(tokens) == ROUNDS * expected.parallel
    peak = peak_rss(srv.proc.pid)
    assert peak <= cap, f"{case}: peak RSS {peak / MIB:.0f} MiB over the cap {cap / MIB:.0f}"
    # The estimate is what the server takes, within 10%.
    error = (expected.need_bytes - peak) / peak
    assert abs(error) <= 0.10, (
        f"{case}: need {expected.need_bytes / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB "
        f"({error:+.1%}); prompts {tokens}"
    )
