"""End-to-end fixtures: the real server, started as a subprocess with the real model.

``server`` is one session-wide server (default settings, rate limiting off). Tests that need
other flags, or that change the server's state (unload, load conflicts), start their own
with ``server_factory(*flags)`` (or ``it_support.start_server``); every server started here
is stopped with SIGTERM at the end and must exit within 15 s with status 0 (the
clean-shutdown check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from it_support import ServerProcess, checked_client, start_server

ENGINE_FAILURE_LOG_LINES = ("decode loop failed", "stream failed", "llama_decode returned")


@pytest.fixture(scope="session")
def server_process() -> Iterator[ServerProcess]:
    """The session-wide server with default settings (rate limiting off)."""
    srv = start_server()
    yield srv
    alive_at_end = srv.alive()
    srv_output = srv.output()
    assert alive_at_end, f"the session server died during the run; output:\n{srv_output[-6000:]}"
    srv.assert_clean_shutdown()
    # The engine never failed behind the tests' backs (a crashed decode loop, a stream that
    # died, a llama_decode error): those are logged, whatever the client saw.
    full_log = srv.output()
    for marker in ENGINE_FAILURE_LOG_LINES:
        assert marker not in full_log, f"server log has {marker!r}:\n{full_log[-6000:]}"


@pytest.fixture(scope="session")
def server(server_process: ServerProcess) -> str:
    """Base URL of the session-wide server."""
    return server_process.base_url


@pytest.fixture(scope="session")
def small_server() -> Iterator[ServerProcess]:
    """A server with a 256-token context per request and a 4 KiB body limit."""
    srv = start_server("--n-ctx", "256", "--max-body-bytes", "4096", "--parallel", "4")
    yield srv
    srv.assert_clean_shutdown()


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with checked_client(server) as c:
        yield c


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """``start_server`` for one test: its servers are stopped (cleanly) after the test."""
    started: list[ServerProcess] = []

    def factory(*flags: str, **kwargs: Any) -> ServerProcess:
        srv = start_server(*flags, **kwargs)
        started.append(srv)
        return srv

    yield factory
    problems = [p for p in (srv.shutdown_problem() for srv in started) if p is not None]
    assert not problems, "\n\n".join(problems)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the known-bug (xfail) tests first.

    The session server's clean-shutdown check runs in the teardown of the session's last
    test; were that an xfail test, a failed check would be swallowed as "XFAIL at teardown".
    """
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if here in Path(item.path).parents]
    ours = sorted((items[i] for i in slots), key=lambda it: it.get_closest_marker("xfail") is None)
    for i, item in zip(slots, ours, strict=True):
        items[i] = item
