"""--cache-type-k/v: a quantized KV cache loads, generates, and takes the memory the
estimate says."""

from __future__ import annotations

import pytest
from it_support import check_generate_body, start_server

from locallab_cpp.config import load_settings
from locallab_cpp.models import sizing
from locallab_cpp.models.registry import Registry

pytestmark = pytest.mark.integration


def test_q8_0_cache_serves_and_is_smaller(client) -> None:  # type: ignore[no-untyped-def]
    default = client.get("/system/info").json()["active_model"]
    assert (default["cache_type_k"], default["cache_type_v"]) == ("f16", "f16")
    assert default["sliding_window"] == 512
    srv = start_server("--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
    try:
        with srv.client() as c:
            active = c.get("/system/info").json()["active_model"]
            assert (active["cache_type_k"], active["cache_type_v"]) == ("q8_0", "q8_0")
            # Same pool and windows, q8_0 keys and values: 34/32 bytes an element, not 2.
            assert active["kv_pool_tokens"] == default["kv_pool_tokens"]
            ratio = active["kv_cache_bytes"] / default["kv_cache_bytes"]
            assert ratio == pytest.approx(34 / 64, rel=0.01)
            r = c.post("/generate", json={"prompt": "The river", "max_length": 8})
            assert r.status_code == 200, r.text
            check_generate_body(r.json(), max_length=8)
    finally:
        srv.assert_clean_shutdown()
    # The registry's estimate uses the same figure (models list, /models/available).
    spec = Registry.load(None).get("gemma-3-270m")
    q8 = load_settings({"cache_type_k": "q8_0", "cache_type_v": "q8_0"}, env={})
    f16 = load_settings({}, env={})
    assert sizing.kv_bytes_per_token(spec, q8) == round(
        sizing.kv_bytes_per_token(spec, f16) * 34 / 64
    )
