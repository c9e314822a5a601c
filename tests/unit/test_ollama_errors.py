"""The Ollama API's error bodies: ``{"error": "..."}`` on every /api path."""

from __future__ import annotations

from pathlib import Path

from helpers import make_client, write_registry


def test_unknown_api_path_is_ollama_404(tmp_path: Path) -> None:
    with make_client(write_registry(tmp_path)) as client:
        r = client.get("/api/no-such-route")
        assert r.status_code == 404
        body = r.json()
        assert set(body) == {"error"}
        assert isinstance(body["error"], str) and body["error"]
