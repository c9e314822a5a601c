"""--repack on the real model: the CPU_REPACK-only load (what auto picks on AMX CPUs) serves
the same greedy text as the default, and off still serves."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from it_support import DIVERGENCE_PROMPTS, ServerProcess, check_generate_body, start_server

from locallab_cpp.engine.llama.repack import cpu_flags

pytestmark = pytest.mark.integration

MAX_LENGTH = 12
GREEDY = {"do_sample": False, "repetition_penalty": 1.0, "max_length": MAX_LENGTH}
PROMPTS = DIVERGENCE_PROMPTS[:3]
X86_REPACK = "avx2" in cpu_flags()
"""The no-amx rules are x86's (AMX exists only there); elsewhere no-amx repacks nothing."""


def _greedy_texts(c: httpx.Client) -> list[str]:
    texts = []
    for prompt in PROMPTS:
        r = c.post("/generate", json={"prompt": prompt, **GREEDY})
        assert r.status_code == 200, r.text
        check_generate_body(r.json(), max_length=MAX_LENGTH)
        texts.append(r.json()["response"])
    return texts


@pytest.fixture(scope="module")
def no_amx() -> Iterator[ServerProcess]:
    srv = start_server("--repack", "no-amx", "--parallel", "1")
    yield srv
    srv.assert_clean_shutdown()


@pytest.mark.skipif(not X86_REPACK, reason="the CPU_REPACK naming rules are x86-64's")
def test_no_amx_names_only_tensors_the_repack_buffer_takes(no_amx: ServerProcess) -> None:
    """Gemma 3 270M mixes q5_0, q8_0, q6_K and q4_K weights; only the q4_K matrices may go to
    CPU_REPACK (naming the others aborts the load), and the model then answers."""
    with no_amx.client() as c:
        active = c.get("/system/info").json()["active_model"]
        assert active["repack"] == "no-amx", active
        # Every attn_output and 9 of the 18 ffn_down matrices are q4_K in this file.
        assert "27 tensors repacked" in active["repack_reason"], active
        assert all(_greedy_texts(c))


@pytest.mark.skipif(not X86_REPACK, reason="the CPU_REPACK naming rules are x86-64's")
def test_no_amx_gives_the_default_servers_text(no_amx: ServerProcess, client: httpx.Client) -> None:
    """Without AMX, auto is on, and llama.cpp repacks exactly the tensors that no-amx names;
    with AMX, auto is no-amx. Either way the same kernels run, so greedy text is equal."""
    with no_amx.client() as c:
        assert _greedy_texts(c) == _greedy_texts(client)


def test_off_serves() -> None:
    srv = start_server("--repack", "off", "--parallel", "1")
    try:
        with srv.client() as c:
            active = c.get("/system/info").json()["active_model"]
            assert active["repack"] == "off", active
            assert all(_greedy_texts(c))
    finally:
        srv.assert_clean_shutdown()
