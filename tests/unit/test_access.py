"""Who may talk to the server (http/access.py, http/cors.py): API keys, the Host check
against DNS rebinding, CORS and foreign origins, JSON-only bodies (their settings, flags
and start-up warnings: test_access_settings.py).

Every refusal is checked in the LocalLab format ({"detail"}) and, for a made-up API at
/toy with an error format of its own, in that API's format."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fakes import FakeFactory
from helpers import REMOTE_HOST, assert_error, from_address, make_client
from litestar import Controller, post
from litestar.params import JSONBody

from locallab_cpp.api import Api
from locallab_cpp.api.locallab.routes import LOCALLAB_API
from locallab_cpp.config import Settings
from locallab_cpp.errors import ErrorKind
from locallab_cpp.http import access
from locallab_cpp.http.access import host_name, is_json
from locallab_cpp.http.errors import Problem

GEN = {"prompt": "hello"}
ORIGIN = "http://localhost:3000"


class ToyErrors:
    """An error format unlike LocalLab's: {"error": {"kind", "message"}}."""

    def status(self, kind: ErrorKind) -> int:
        return {ErrorKind.UNAUTHORIZED: 401, ErrorKind.FORBIDDEN: 403}.get(kind, 400)

    def body(self, problem: Problem, status: int) -> Any:
        return {"error": {"kind": problem.kind.value, "message": problem.detail}}


class Echo(msgspec.Struct):
    n: int


class ToyController(Controller):
    @post("/echo", status_code=200)
    async def echo(self, data: JSONBody[Echo]) -> Echo:
        return data


TOY_API = Api(name="toy", prefix="/toy", routes=(ToyController,), errors=ToyErrors())


def toy_error(response: Any, status: int, kind: ErrorKind) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"]["kind"] == kind.value, body
    return str(body["error"]["message"])


# ------------------------------------------------------------------------------ API keys


def test_no_key_or_a_wrong_key_is_401_with_www_authenticate(models_file: Path) -> None:
    with make_client(models_file, api_keys=("k1", "k2")) as client:
        missing = client.post("/generate", json=GEN)
        assert_error(missing, 401, "Missing API key", "Bearer", "x-api-key")
        assert missing.headers["www-authenticate"] == "Bearer"
        for headers in (
            {"Authorization": "Bearer nope"},
            {"x-api-key": "k1x"},
            {"Authorization": "Basic k1"},  # the key, but not as a bearer token
            {"Authorization": "Bearer k"},  # a prefix of a key
        ):
            wrong = client.post("/generate", json=GEN, headers=headers)
            assert wrong.status_code == 401, headers
            assert wrong.headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/models/available", headers={"x-api-key": "bad"}), 401)
        # Unknown routes too: nothing is disclosed without a key.
        assert_error(client.get("/nope"), 401)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k1"},
        {"Authorization": "bearer k2"},
        {"x-api-key": "k2"},
        {"X-Api-Key": "k1"},
        {"Authorization": "Bearer wrong", "x-api-key": "k1"},
    ],
)
def test_either_header_form_with_any_key_passes(models_file: Path, headers: dict[str, str]) -> None:
    with make_client(models_file, api_keys=("k1", "k2")) as client:
        response = client.post("/generate", json=GEN, headers=headers)
        assert response.status_code == 200, response.text
        assert client.get("/models/available", headers=headers).status_code == 200


def test_health_is_open_without_a_key(models_file: Path) -> None:
    with make_client(models_file, api_keys=("k1",)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health/").status_code == 200  # normalized first
        assert_error(client.get("/system/info"), 401)


def test_401_is_in_the_format_of_the_paths_api(models_file: Path) -> None:
    with make_client(models_file, apis=(LOCALLAB_API, TOY_API), api_keys=("k1",)) as client:
        response = client.post("/toy/echo", json={"n": 1})
        assert "API key" in toy_error(response, 401, ErrorKind.UNAUTHORIZED)
        assert response.headers["www-authenticate"] == "Bearer"
        ok = client.post("/toy/echo", json={"n": 1}, headers={"x-api-key": "k1"})
        assert ok.json() == {"n": 1}


def test_a_refused_key_spends_no_rate_limit_budget(models_file: Path) -> None:
    with make_client(models_file, api_keys=("k1",), rate_limit=1.0, rate_burst=1) as client:
        from_address(client)
        for _ in range(3):
            assert client.post("/generate", json=GEN).status_code == 401
        ok = client.post("/generate", json=GEN, headers={"x-api-key": "k1"})
        assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------------------- Host check


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("localhost.:8000", "localhost"),
        ("example.org", "example.org"),
        ("::1", "::1"),  # unbracketed (invalid, but not mistaken for name:port)
    ],
)
def test_host_name(value: str, name: str) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "[::1]", "192.168.1.20:80"],
)
def test_own_names_and_addresses_are_answered(models_file: Path, host: str) -> None:
    with make_client(models_file) as client:
        response = client.get("/models/available", headers={"Host": host})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["evil.com", "evil.com:8000", "localhost.evil.com", "x"])
def test_a_foreign_host_is_403_before_any_work(
    models_file: Path, factory: FakeFactory, host: str
) -> None:
    with make_client(models_file, factory) as client:
        response = client.post("/generate", json=GEN, headers={"Host": host})
        assert_error(response, 403, "--allowed-host")
        assert factory.last.seen == []
        # /health is checked too; the error format is the path's API's.
        assert_error(client.get("/health", headers={"Host": host}), 403)


def test_allowed_hosts_and_star(models_file: Path) -> None:
    with make_client(models_file, allowed_hosts=("LLM.home.arpa",)) as client:
        assert client.get("/health", headers={"Host": "llm.home.arpa:8000"}).status_code == 200
        assert client.get("/health", headers={"Host": "other.home.arpa"}).status_code == 403
    with make_client(models_file, allowed_hosts=("*",)) as client:
        assert client.get("/health", headers={"Host": "anything.example"}).status_code == 200


def test_the_bound_name_is_answered(models_file: Path) -> None:
    with make_client(models_file, host="myhost.lan") as client:
        assert client.get("/health", headers={"Host": "myhost.lan:8000"}).status_code == 200
        assert client.get("/health", headers={"Host": "evil.com"}).status_code == 403


def test_a_wildcard_bind_answers_the_machines_own_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access.socket, "gethostname", lambda: "Laptop.example.net")
    names = access.allowed_host_names(Settings(host="0.0.0.0"))
    assert names is not None
    assert {"laptop.example.net", "laptop", "laptop.local", "localhost", "::1"} <= names
    assert "0.0.0.0" not in names
    assert access.allowed_host_names(Settings(host="::", allowed_hosts=("*",))) is None


def test_host_error_is_in_the_paths_api_format(models_file: Path) -> None:
    with make_client(models_file, apis=(LOCALLAB_API, TOY_API)) as client:
        response = client.post("/toy/echo", json={"n": 1}, headers={"Host": "evil.com"})
        toy_error(response, 403, ErrorKind.FORBIDDEN)


def test_an_oversized_request_head_is_431(models_file: Path) -> None:
    with make_client(models_file, max_header_bytes=2048) as client:
        response = client.get("/health", headers={"X-Big": "a" * 4000})
        assert_error(response, 431, "headers are too large")
        assert client.get("/health", headers={"X-Small": "a" * 1000}).status_code == 200


# ----------------------------------------------------------------------------------- CORS

PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


def test_preflight_of_an_allowed_origin_is_204(models_file: Path) -> None:
    with make_client(models_file, cors_origins=(ORIGIN + "/",), api_keys=("k1",)) as client:
        response = client.options("/generate", headers=PREFLIGHT)
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "x-stainless-os" in response.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in response.headers
        private = {**PREFLIGHT, "Access-Control-Request-Private-Network": "true"}
        response = client.options("/generate", headers=private)
        assert response.headers["access-control-allow-private-network"] == "true"


def test_preflight_of_another_origin_is_403(models_file: Path) -> None:
    with make_client(models_file, cors_origins=(ORIGIN,)) as client:
        other = {**PREFLIGHT, "Origin": "https://evil.example"}
        response = client.options("/generate", headers=other)
        assert_error(response, 403, "--cors-origin")
        assert "access-control-allow-origin" not in response.headers
    with make_client(models_file) as client:  # CORS off: every preflight refused
        assert_error(client.options("/generate", headers=PREFLIGHT), 403)


def test_preflights_are_never_rate_limited(models_file: Path) -> None:
    with make_client(models_file, cors_origins=(ORIGIN,), rate_limit=1.0, rate_burst=1) as c:
        from_address(c, REMOTE_HOST)
        assert c.post("/generate", json=GEN).status_code == 200  # the bucket is now empty
        for _ in range(5):
            assert c.options("/chat", headers=PREFLIGHT).status_code == 204


def test_cors_headers_on_a_429_and_a_401(models_file: Path) -> None:
    with make_client(
        models_file, cors_origins=(ORIGIN,), api_keys=("k1",), rate_limit=1.0, rate_burst=1
    ) as client:
        from_address(client)
        unauthorized = client.post("/generate", json=GEN, headers={"Origin": ORIGIN})
        assert_error(unauthorized, 401)
        assert unauthorized.headers["access-control-allow-origin"] == ORIGIN
        assert "WWW-Authenticate" in unauthorized.headers["access-control-expose-headers"]
        keyed = {"Origin": ORIGIN, "Authorization": "Bearer k1"}
        ok = client.post("/generate", json=GEN, headers=keyed)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert ok.headers["vary"] == "Origin"
        limited = client.post("/generate", json=GEN, headers=keyed)
        assert_error(limited, 429)
        assert limited.headers["access-control-allow-origin"] == ORIGIN
        assert "Retry-After" in limited.headers["access-control-expose-headers"]


def test_star_origin_is_sent_as_star_without_credentials(models_file: Path) -> None:
    with make_client(models_file, cors_origins=("*",)) as client:
        response = client.post("/generate", json=GEN, headers={"Origin": "https://a.example"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:3001"])
def test_a_foreign_origin_is_refused_before_the_engine_sees_anything(
    models_file: Path, factory: FakeFactory, origin: str
) -> None:
    with make_client(models_file, factory, cors_origins=(ORIGIN,)) as client:
        response = client.post("/generate", json=GEN, headers={"Origin": origin})
        assert_error(response, 403, "Cross-origin")
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert_error(client.post("/chat", json=chat, headers={"Origin": origin}), 403)
        assert_error(client.get("/models/available", headers={"Origin": origin}), 403)
        assert factory.last.seen == []
        # Without Origin (curl, SDKs) the same request passes.
        assert client.post("/generate", json=GEN).status_code == 200
        assert len(factory.last.seen) == 1


def test_the_servers_own_origin_passes(models_file: Path) -> None:
    # A page served by this server (/schema's docs) sends its own origin on POST.
    with make_client(models_file) as client:
        own = {"Origin": "http://testserver.local", "Host": "testserver.local"}
        assert client.post("/generate", json=GEN, headers=own).status_code == 200
        spoof = {"Origin": "http://evil.example", "Host": "testserver.local"}
        assert client.post("/generate", json=GEN, headers=spoof).status_code == 403


# ----------------------------------------------------------------------- JSON bodies only


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_non_json_post_is_415(models_file: Path, factory: FakeFactory, content_type: str) -> None:
    # From a page (it has an Origin, here even one allowed by CORS).
    with make_client(models_file, factory, cors_origins=(ORIGIN,)) as client:
        body = msgspec.json.encode(GEN)
        page = {"Content-Type": content_type, "Origin": ORIGIN}
        response = client.post("/generate", content=body, headers=page)
        assert_error(response, 415, "application/json")
        assert factory.last.seen == []


def test_a_json_body_sent_as_a_form_without_origin_passes(models_file: Path) -> None:
    # Ollama's documented `curl URL -d '{...}'` sends its JSON as a form; no browser's.
    with make_client(models_file) as client:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        response = client.post("/generate", content=msgspec.json.encode(GEN), headers=form)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_with_or_without_charset_passes(models_file: Path, content_type: str) -> None:
    with make_client(models_file) as client:
        body = msgspec.json.encode(GEN)
        response = client.post("/generate", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text


def test_is_json() -> None:
    assert is_json("application/json")
    assert is_json('application/json; charset="utf-8"')
    assert not is_json("application/json; charset=latin-1")
    assert not is_json("application/jsonp")
    assert not is_json("text/json")


def test_no_content_type_passes_with_an_empty_body_or_without_origin(models_file: Path) -> None:
    with make_client(models_file, cors_origins=(ORIGIN,)) as client:
        body = msgspec.json.encode(GEN)
        # A browser always sends Origin with a POST: from a page, a typeless body is refused.
        page = {"Origin": ORIGIN}
        assert_error(client.post("/generate", content=body, headers=page), 415, "none was given")
        # Without Origin it is no browser's: LiteLLM's Ollama provider posts JSON so.
        assert client.post("/generate", content=body).status_code == 200
        assert client.post("/models/unload", headers=page).status_code == 200


def test_415_is_in_the_paths_format_and_after_the_key(models_file: Path) -> None:
    apis = (LOCALLAB_API, TOY_API)
    with make_client(models_file, apis=apis, api_keys=("k1",), cors_origins=(ORIGIN,)) as client:
        plain = {"Content-Type": "text/plain", "Origin": ORIGIN}
        assert client.post("/toy/echo", content=b"{}", headers=plain).status_code == 401
        keyed = {**plain, "x-api-key": "k1"}
        response = client.post("/toy/echo", content=b'{"n": 1}', headers=keyed)
        assert response.status_code == 415
        assert response.json()["error"]["kind"] == ErrorKind.UNSUPPORTED_MEDIA_TYPE.value


def test_the_json_check_hands_on_the_body_it_peeked_at() -> None:
    async def run() -> list[Any]:
        received: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            while True:
                message = await receive()
                received.append(message)
                if not message.get("more_body"):
                    break

        messages = [
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": False},
        ]

        async def receive() -> Any:
            return messages.pop(0)

        scope = {"type": "http", "method": "DELETE", "path": "/x", "headers": []}
        await access.JsonOnly(app, None)(scope, receive, None)  # type: ignore[arg-type]
        return received

    assert [m["more_body"] for m in asyncio.run(run())] == [True, False]
