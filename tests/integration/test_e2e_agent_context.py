"""Context for agents at the defaults: coding agents (Claude Code and the like) open with
prompts of about 19,000 tokens (system prompt and tool definitions). The real server,
started with no --n-ctx, gives each request the model's trained context (32,768 tokens for
the embedded model) where memory allows, says so in its load log and /system/info, and
answers such a prompt; the server's peak resident memory stays within the plan's estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from it_support import ServerProcess, check_chat_body, peak_rss

from locallab_cpp.config import load_settings
from locallab_cpp.models import sizing
from locallab_cpp.models.registry import Registry

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
TRAINED = 32768
"""The embedded model's trained context (its GGUF's gemma3.context_length)."""
PARAGRAPHS = 830
"""Paragraphs of the long prompt: about 22.9 Gemma tokens each, so about 19,000 in all."""
LONG_PROMPT_S = 900.0
"""Seconds the long prompt may take: one llama.cpp thread on a small shared machine."""


def _agent_prompt() -> str:
    """A prompt of about 19,000 tokens, numbered so that no two paragraphs are alike."""
    return "".join(
        f"Note {i}: the build step reads the settings file, checks each path and writes a "
        "log line. "
        for i in range(PARAGRAPHS)
    )


def test_a_19k_token_agent_prompt_fits_at_the_defaults(
    server_factory: Callable[..., ServerProcess],
) -> None:
    registry = Registry.load(None)
    spec = registry.get("gemma-3-270m")
    path = registry.ensure_local(spec)
    # What this machine's free memory gives at the defaults; the test needs the whole
    # trained context (any machine with a gigabyte free has it).
    expected = sizing.plan(spec, load_settings({}), size=path.stat().st_size)
    if expected.n_ctx_slot < TRAINED:
        pytest.skip(f"this machine's free memory gives a shorter context: {expected.reason}")

    srv = server_factory()
    log = srv.output()
    assert f"model gemma-3-270m: n_ctx {TRAINED} (the model's trained context)" in log, log[-3000:]

    with srv.client() as client:
        model = client.get("/system/info").json()["active_model"]
        assert model["n_ctx"] == TRAINED and model["n_ctx_train"] == TRAINED, model
        assert model["n_ctx_reason"] == "the model's trained context", model
        # The pool is still shared: one whole context plus 2048 cells for each other slot.
        slots = model["parallel"]
        assert slots == sizing.DEFAULT_PARALLEL, model
        assert model["kv_pool_tokens"] == sizing.auto_pool(TRAINED, slots), model

        body = {
            "messages": [{"role": "user", "content": _agent_prompt()}],
            "max_tokens": 4,
            "temperature": 0,
        }
        r = client.post("/v1/chat/completions", json=body, timeout=LONG_PROMPT_S)
    assert r.status_code == 200, r.text[:500]
    reply = r.json()
    check_chat_body(reply, max_length=4)
    usage = reply["usage"]
    assert 18000 < usage["prompt_tokens"] < TRAINED - 4, usage

    peak = peak_rss(srv.proc.pid)
    with srv.client() as client:
        model = client.get("/system/info").json()["active_model"]
    # The prompt cache kept this prompt's state (within its stated budget) beside the model.
    cached = int((model.get("prompt_cache") or {}).get("bytes", 0))
    assert cached <= expected.prompt_cache_bytes, model.get("prompt_cache")
    # The figure docs/benchmarks.md reports ("At the new default context"; pytest -s).
    print(
        f"\npeak RSS {peak / MIB:.0f} MiB after a {usage['prompt_tokens']}-token prompt; "
        f"estimate {expected.need_bytes / MIB:.0f} MiB; {expected.reason}"
    )
    assert peak <= expected.need_bytes * 1.10 + cached, (peak / MIB, cached, expected.reason)
