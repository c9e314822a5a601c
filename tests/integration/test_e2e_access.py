"""Access rules on a real server (uvicorn, httptools, the whole stack): API keys given as
repeated --api-key flags, the Host check against DNS rebinding, JSON-only bodies and the
request-head limit. No model is needed: every check answers before one would be used."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from it_support import ServerProcess, error_detail


def test_api_keys_host_check_and_json_only(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory("--no-model", "--api-key", "k1", "--api-key", "k2")
    with srv.client() as c:
        # /health is open (start_server polled it without a key).
        assert c.get("/health").status_code == 200

        missing = c.get("/models/available")
        assert "API key" in error_detail(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        error_detail(c.get("/models/available", headers={"Authorization": "Bearer k3"}), 401)
        for headers in ({"Authorization": "Bearer k1"}, {"x-api-key": "k2"}):
            ok = c.get("/models/available", headers=headers)
            assert ok.status_code == 200, ok.text

        keyed = {"Authorization": "Bearer k1"}
        # DNS rebinding: the page's own name arrives as Host.
        rebound = c.get("/models/available", headers={**keyed, "Host": "evil.example"})
        assert "evil.example" in error_detail(rebound, 403)
        error_detail(c.get("/health", headers={"Host": f"evil.example:{srv.port}"}), 403)
        for host in (f"localhost:{srv.port}", f"[::1]:{srv.port}", "127.0.0.1"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host

        # The text/plain no-preflight trick, from the server's own origin (a page there).
        own = f"http://127.0.0.1:{srv.port}"
        plain = {**keyed, "Content-Type": "text/plain", "Origin": own}
        response = c.post("/generate", content=b'{"prompt": "hi"}', headers=plain)
        assert "application/json" in error_detail(response, 415)

        # A foreign page's request, key or not.
        foreign = {**keyed, "Origin": "https://evil.example"}
        error_detail(c.post("/generate", json={"prompt": "hi"}, headers=foreign), 403)

        # A request head over --max-header-bytes (64 KiB by default).
        big = c.get("/health", headers={"X-Big": "a" * 70_000})
        assert "too large" in error_detail(big, 431)

    # The key is required over a plain connection too, not only through the checked client.
    r = httpx.post(srv.base_url + "/models/unload", timeout=30)
    assert r.status_code == 401
    assert srv.alive()
