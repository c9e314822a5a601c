"""--ollama-port against the real server: one process, one model, two ports (issue 19,
item 7). Both answer every API; the server shuts down cleanly."""

from __future__ import annotations

from collections.abc import Callable

from it_support import ServerProcess, checked_client, free_port


def test_the_same_app_answers_on_both_ports(
    server_factory: Callable[..., ServerProcess],
) -> None:
    extra = free_port()
    srv = server_factory("--ollama-port", str(extra))
    extra_url = f"http://127.0.0.1:{extra}"
    models = []
    for url in (srv.base_url, extra_url):
        with checked_client(url) as client:
            health = client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["model_loaded"] is True
            # The Host header names the port it came to; the Host check accepts it.
            listed = client.get(
                "/v1/models", headers={"Host": f"localhost:{url.rsplit(':', 1)[1]}"}
            )
            assert listed.status_code == 200, listed.text
            models.append([m["id"] for m in listed.json()["data"] if m.get("loaded")])
    # One engine: the same model is loaded, whichever port is asked.
    assert models[0] == models[1] != []
    with checked_client(extra_url) as client:  # what Ollama's clients ask first
        version = client.get("/api/version")
        assert version.status_code == 200, version.text
        assert isinstance(version.json()["version"], str)
    output = srv.output()
    assert f"http://127.0.0.1:{extra}" in output
    assert output.count("Application startup complete") == 1  # the lifespan ran once
    # The clean-shutdown check (SIGTERM, exit 0, lifespan shutdown) runs in server_factory.
