"""serving/supersede.py: the registry of running FIM requests by client, on handles fed by
hand; then /infill over the fake engine, two overlapping requests with one key and with two."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
from fakes import FakeFactory
from helpers import run_async, wait_until

from locallab_cpp.engine.types import Finished, GenerationHandle, TextChunk
from locallab_cpp.serving.supersede import (
    ClientKey,
    Superseded,
    Supersessions,
    client_key,
    registry_of,
)

KEY = ClientKey(path="/infill", model="m", host="127.0.0.1", agent="curl/8")


async def _read(handle: GenerationHandle) -> list[Any]:
    out: list[Any] = []
    try:
        async for event in handle.events():
            out.append(event)
    except Superseded as exc:
        out.append(exc)
    return out


def test_the_next_request_under_a_key_cancels_the_previous_one() -> None:
    async def main() -> None:
        registry = Supersessions()
        first = registry.enter(KEY)
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        first.attach(handle)
        handle.push(TextChunk("so far"))
        reader = asyncio.create_task(_read(handle))
        await asyncio.sleep(0)
        second = registry.enter(KEY)
        out = await asyncio.wait_for(reader, 2)
        assert first.superseded and not second.superseded
        assert handle.cancelled.is_set()
        assert isinstance(out[0], TextChunk) and isinstance(out[-1], Superseded)
        assert registry.superseded == 1 and len(registry) == 1
        first.finish()  # the older one ends after the newer took its key: the newer stays
        assert len(registry) == 1
        second.finish()
        assert len(registry) == 0

    asyncio.run(main())


def test_other_keys_are_left_alone() -> None:
    async def main() -> None:
        registry = Supersessions()
        first = registry.enter(KEY)
        others = [
            ClientKey(path="/v1/completions", model="m", host="127.0.0.1", agent="curl/8"),
            ClientKey(path="/infill", model="other", host="127.0.0.1", agent="curl/8"),
            ClientKey(path="/infill", model="m", host="10.0.0.2", agent="curl/8"),
            ClientKey(path="/infill", model="m", host="127.0.0.1", agent="axios/1"),
            ClientKey(path="/infill", model="m", host="127.0.0.1", agent="curl/8", tag="b"),
        ]
        for key in others:
            registry.enter(key)
        assert not first.superseded and registry.superseded == 0 and len(registry) == 6

    asyncio.run(main())


def test_a_request_superseded_before_it_submitted_is_cancelled_when_it_does() -> None:
    async def main() -> None:
        registry = Supersessions()
        first = registry.enter(KEY)
        called: list[bool] = []
        first.on_supersede.append(lambda: called.append(True))
        registry.enter(KEY)
        assert called == [True]
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        first.attach(handle)
        assert handle.cancelled.is_set()
        out = await asyncio.wait_for(_read(handle), 2)
        assert len(out) == 1 and isinstance(out[0], Superseded)

    asyncio.run(main())


def test_a_finished_generation_reads_to_its_end_even_if_superseded() -> None:
    async def main() -> None:
        registry = Supersessions()
        first = registry.enter(KEY)
        handle = GenerationHandle(loop=asyncio.get_running_loop())
        first.attach(handle)
        handle.push(TextChunk("all"))
        handle.push(Finished("stop", 3, 1, 0))
        registry.enter(KEY)  # Finished is queued before the signal: the reader sees it
        out = await asyncio.wait_for(_read(handle), 2)
        assert isinstance(out[-1], Finished) and len(out) == 2

    asyncio.run(main())


def test_client_key_takes_the_header_then_the_body_tag() -> None:
    headers = {"user-agent": "llama.vim", "x-client-id": "buffer-3"}
    key = client_key(path="/infill", model="m", host="127.0.0.1", headers=headers, tag=7)
    assert (key.agent, key.tag, key.host) == ("llama.vim", "buffer-3", "127.0.0.1")
    key = client_key(path="/infill", model="m", host=None, headers={"user-agent": "x"}, tag=7)
    assert (key.tag, key.host) == ("7", "")
    long = client_key(path="/infill", model="m", host="h", headers={"user-agent": "a" * 999})
    assert len(long.agent) == 200 and long.tag == ""


def test_registry_of_makes_one_per_state() -> None:
    state: dict[str, Any] = {}
    assert registry_of(state) is registry_of(state)
    assert registry_of({}) is not registry_of(state)


# ----- /infill over the fake engine ------------------------------------------------------


def _overlapping(
    models_file: Path, first_headers: dict[str, str], second_headers: dict[str, str]
) -> tuple[Any, Any, bool]:
    """Two /infill requests, the second sent while the first waits on the fake's gate;
    whether the first was answered before the gate opened."""
    gate = threading.Event()
    factory = FakeFactory(gate=gate)
    body = {"input_prefix": "def f", "input_suffix": "x", "n_predict": 8}

    async def scenario(http: httpx.AsyncClient) -> tuple[Any, Any, bool]:
        first = asyncio.create_task(http.post("/infill", json=body, headers=first_headers))
        await wait_until(lambda: len(factory.last.seen) == 1)
        second = asyncio.create_task(
            http.post("/infill", json={**body, "stream": True}, headers=second_headers)
        )
        await wait_until(lambda: len(factory.last.seen) == 2)
        done, _ = await asyncio.wait({first}, timeout=1.0)
        early = first in done  # answered while the second still waits on the gate
        gate.set()
        a, b = await first, await second
        return a, b, early

    return run_async(models_file, factory, scenario)


def test_infill_superseded_by_the_same_clients_next_request(models_file: Path) -> None:
    headers = {"user-agent": "llama.vscode"}
    a, b, early = _overlapping(models_file, headers, headers)
    assert early, "the superseded request waited for the gate"
    assert a.status_code == 200, a.text
    body = a.json()
    assert body["stop"] is True and body["stop_type"] == "superseded"
    assert body["content"] == "" and body["tokens_predicted"] == 0
    assert b.status_code == 200 and '"stop_type":"eos"' in b.text.replace(" ", "")


def test_infill_from_two_clients_both_complete(models_file: Path) -> None:
    a, b, early = _overlapping(
        models_file, {"user-agent": "llama.vscode"}, {"user-agent": "llama.vim"}
    )
    assert not early
    assert a.json()["stop_type"] == "eos" and a.json()["content"].startswith("Echo:")
    assert '"stop_type":"eos"' in b.text.replace(" ", "")


def test_infill_client_id_header_separates_two_windows(models_file: Path) -> None:
    a, _, early = _overlapping(
        models_file,
        {"user-agent": "llama.vscode", "x-client-id": "window-1"},
        {"user-agent": "llama.vscode", "x-client-id": "window-2"},
    )
    assert not early and a.json()["stop_type"] == "eos"
