"""Two of our servers behind LiteLLM's proxy (issue 23): the real proxy from PyPI, in its
own virtual environment (.venv-litellm, made by scripts/test.sh from
tests/litellm-requirements.txt), routing one model name to both servers, least-busy.

Sixteen concurrent OpenAI clients talk to the proxy only; every request must be answered
and well formed, and each server's own /metrics must show that it served some of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from it_support import REPO_ROOT, ServerProcess, free_port, start_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LITELLM = REPO_ROOT / ".venv-litellm" / "bin" / "litellm"
MODEL = "gemma-3-270m"
CLIENTS = 16
MAX_TOKENS = 12
LITELLM_STARTUP_S = 180.0
# Clients start this far apart. LiteLLM's least-busy counts a request as in flight only once
# it is about to be sent to a server, after the routing decision: sixteen requests arriving
# in the same instant all see zero everywhere and all go to the first deployment (measured
# with this pin: 16 and 0). A few tens of milliseconds apart, as real clients are, they
# spread (8 and 8 at 20 ms, 9 and 7 at 50 ms).
STAGGER_S = 0.05
# Prompts with an obvious greedy continuation; the answer must be non-empty text.
PROMPTS = [
    "Count on: 1, 2, 3, 4,",
    "Name the next weekday after Monday.",
    "Say hello in three words.",
    "List two colours of the rainbow.",
]


# The proxy's key for this run. This LiteLLM refuses to start without a master key (rather
# than accept every request unauthenticated); a fresh random one is what a deployment has too.
MASTER_KEY = "sk-" + secrets.token_hex(16)


def litellm_env() -> dict[str, str]:
    """The proxy's environment: nothing that makes it reach the internet or a database."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            # The bundled copies of the price map and LiteLLM's other data files instead of
            # downloading the latest ones from GitHub at start-up.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
            "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
            "LITELLM_LOCAL_BLOG_POSTS": "True",
            "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
            "LITELLM_TELEMETRY": "False",
            "PYTHONUNBUFFERED": "1",
            # The proxy may read its own keys from the environment; ours are never needed.
            "OPENAI_API_KEY": "dummy",
        }
    )
    return env


def litellm_config(ports: list[int]) -> str:
    """A LiteLLM YAML config: one model name, one deployment per server, least-busy."""
    lines = ["model_list:"]
    for port in ports:
        lines += [
            f"  - model_name: {MODEL}",
            "    litellm_params:",
            f"      model: openai/{MODEL}",
            f"      api_base: http://127.0.0.1:{port}/v1",
            "      api_key: dummy",
        ]
    lines += ["router_settings:", "  routing_strategy: least-busy", ""]
    return "\n".join(lines)


class LiteLLMProxy:
    """``litellm --config CFG --port PORT`` as a subprocess, its output in a log file."""

    def __init__(self, config: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        fd, name = tempfile.mkstemp(prefix="locallab-it-litellm-", suffix=".log")
        self.log_path = Path(name)
        cmd = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(self.port), "--telemetry", "False"]  # fmt: skip
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=litellm_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + LITELLM_STARTUP_S
        with httpx.Client(base_url=self.base_url, timeout=5) as c:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, (
                    f"litellm exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
                )
                with contextlib.suppress(httpx.HTTPError):
                    if c.get("/health/liveliness").status_code == 200:
                        return
                time.sleep(0.5)
        raise AssertionError(f"litellm not ready in {LITELLM_STARTUP_S}s:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[ServerProcess]]:
    flags = ("--metrics", "--n-ctx", "1024", "--parallel", "2", "--threads", "1")
    started = [start_server(*flags), start_server(*flags)]
    yield started
    for srv in started:
        srv.assert_clean_shutdown()


@pytest.fixture(scope="module")
def litellm_installed() -> Path:
    # Never skipped: a missing proxy is a broken checkout, fixed by the test command. Checked
    # before the servers start, so the failure comes at once.
    assert LITELLM.exists(), (
        f"{LITELLM} is missing: run scripts/test.sh, which installs LiteLLM's proxy from "
        "tests/litellm-requirements.txt into .venv-litellm"
    )
    return LITELLM


@pytest.fixture(scope="module")
def proxy(
    litellm_installed: Path,
    servers: list[ServerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    config = tmp_path_factory.mktemp("litellm") / "config.yaml"
    config.write_text(litellm_config([s.port for s in servers]), encoding="utf-8")
    running = LiteLLMProxy(config)
    try:
        running.wait_ready()
        yield running.base_url
    finally:
        running.stop()
    assert running.proc.returncode is not None, "litellm still running after stop()"


def openai_200s(srv: ServerProcess) -> float:
    """``locallab_requests_total{api="openai",status="200"}`` from the server's /metrics."""
    r = httpx.get(srv.base_url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == "locallab_requests_total" and sample.labels == {
                "api": "openai",
                "status": "200",
            }:
                return sample.value
    return 0.0


async def one_request(client: openai.AsyncOpenAI, i: int) -> dict[str, Any]:
    """One chat completion through the proxy; odd requests stream."""
    messages: list[Any] = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
    if i % 2:
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
        )
        text = ""
        finish: str | None = None
        ids: set[str] = set()
        async for chunk in stream:
            ids.add(chunk.id)
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return {"stream": True, "text": text, "finish": finish, "ids": ids}
    reply = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.usage is not None
    return {
        "stream": False,
        "text": reply.choices[0].message.content or "",
        "finish": reply.choices[0].finish_reason,
        "ids": {reply.id},
        "completion_tokens": reply.usage.completion_tokens,
        "role": reply.choices[0].message.role,
    }


def test_sixteen_clients_through_litellm_reach_both_servers(
    servers: list[ServerProcess], proxy: str
) -> None:
    before = [openai_200s(s) for s in servers]

    async def run_all() -> list[dict[str, Any]]:
        async with openai.AsyncOpenAI(
            base_url=proxy + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=300
        ) as client:
            return await asyncio.gather(*(staggered(client, i) for i in range(CLIENTS)))

    async def staggered(client: openai.AsyncOpenAI, i: int) -> dict[str, Any]:
        await asyncio.sleep(i * STAGGER_S)
        return await one_request(client, i)

    results = asyncio.run(run_all())

    assert len(results) == CLIENTS
    for i, got in enumerate(results):
        assert got["text"].strip(), f"request {i} got no text: {got}"
        assert got["finish"] in ("stop", "length"), f"request {i}: {got}"
        assert len(got["ids"]) == 1 and all(got["ids"]), f"request {i}: ids {got['ids']}"
        if not got["stream"]:
            assert got["role"] == "assistant"
            assert 1 <= got["completion_tokens"] <= MAX_TOKENS, got
    assert sum(r["stream"] for r in results) == CLIENTS // 2

    after = [openai_200s(s) for s in servers]
    served = [a - b for a, b in zip(after, before, strict=True)]
    # LiteLLM sends each request to one deployment; nothing was retried (max_retries=0 and
    # every request succeeded), so the two servers together answered exactly the sixteen.
    assert sum(served) == CLIENTS, f"the servers counted {served} openai 200s"
    assert all(n >= 1 for n in served), f"least-busy left a server idle: {served}"
    for srv in servers:
        assert srv.alive(), srv.output()[-4000:]
