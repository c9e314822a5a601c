"""The chat page's routes (api/web/routes.py): / and /static/{name} with their security
headers, only the package's own files, and no API key needed for them."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_error, make_client

from locallab_cpp import web
from locallab_cpp.api.web.routes import CONTENT_SECURITY_POLICY


def _check_headers(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"


def test_index_and_every_static_file_are_served_with_the_headers(models_file: Path) -> None:
    with make_client(models_file) as client:
        index = client.get("/")
        assert index.status_code == 200, index.text
        assert index.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in index.text
        _check_headers(index)
        for name, media in web.FILES.items():
            response = client.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].split(";")[0] == media.split(";")[0]
            assert response.content == web.read(name)
            _check_headers(response)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for name in web.FILES:
        text = (web.read(name) or b"").decode("utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in text, name
        # Model text reaches the DOM as text only.
        assert ".innerHTML" not in text and "insertAdjacentHTML" not in text, name


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/../../pyproject.toml",
        "/static/static/app.js",
        "/static/__init__.py",
        "/static/INDEX.HTML",
    ],
)
def test_unknown_files_and_traversal_are_404(models_file: Path, path: str) -> None:
    with make_client(models_file) as client:
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert "[build-system]" not in response.text
        assert "from __future__" not in response.text
    assert web.read("../__init__.py") is None
    assert web.read("__init__.py") is None


def test_the_page_needs_no_key_while_the_api_does(models_file: Path) -> None:
    with make_client(models_file, api_keys=("k1",)) as client:
        assert client.get("/").status_code == 200
        for name in web.FILES:
            assert client.get(f"/static/{name}").status_code == 200, name
        locked = client.get("/v1/models")
        assert locked.status_code == 401
        assert "API key" in locked.json()["error"]["message"]
        assert_error(client.get("/static/nope.js"), 401)  # not a page path: nothing disclosed
        assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_the_pages_own_origin_may_post_json(models_file: Path) -> None:
    """The page's fetch carries Origin = the server's own origin: CORS and JSON-only let it
    in; a foreign origin is still refused."""
    with make_client(models_file) as client:
        own = {"Origin": "http://testserver.local"}
        body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        ok = client.post("/v1/chat/completions", json=body, headers=own)
        assert ok.status_code == 200, ok.text
        assert "access-control-allow-origin" not in ok.headers
        evil = client.post(
            "/v1/chat/completions", json=body, headers={"Origin": "http://evil.example"}
        )
        assert evil.status_code == 403
        assert "access-control-allow-origin" not in evil.headers


def test_head_of_the_page_answers_its_headers_without_a_body(models_file: Path) -> None:
    with make_client(models_file) as client:
        r = client.head("/")
        assert r.status_code == 200 and r.content == b""
        _check_headers(r)
        assert r.headers["content-type"].startswith("text/html")
