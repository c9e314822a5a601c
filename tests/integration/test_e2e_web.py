"""The chat page in a real browser: Debian's chromium, headless, driven by Selenium against
the real server and the embedded model. scripts/test.sh installs chromium and
chromium-driver; without them these tests fail and say so (never skip)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from it_support import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 120.0


def _browser(download_dir: Path) -> object:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(
                f"{path} is missing: install Debian's chromium and chromium-driver "
                "(scripts/test.sh does: apt-get install -y chromium chromium-driver)"
            )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must download nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    driver = _browser(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()  # type: ignore[attr-defined]


def _wait(predicate: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _js(driver: object, script: str) -> object:
    return driver.execute_script(script)  # type: ignore[attr-defined]


def _send(driver: object, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "prompt")  # type: ignore[attr-defined]
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def _answers(driver: object) -> int:
    return int(_js(driver, "return document.querySelectorAll('.message.assistant').length") or 0)


def _last_answer_text(driver: object) -> str:
    return str(
        _js(
            driver,
            "const a=[...document.querySelectorAll('.message.assistant .answer')];"
            "return a.length ? a[a.length-1].textContent : ''",
        )
        or ""
    )


def _idle(driver: object) -> bool:
    return bool(_js(driver, "return !document.body.classList.contains('busy')"))


def _active_sequences(srv: ServerProcess) -> int:
    info = httpx.get(srv.base_url + "/system/info", timeout=30).json()
    return int(info["active_model"]["active_sequences"])


def _settings(driver: object, max_tokens: int, temperature: float = 0.0) -> None:
    _js(driver, "document.getElementById('toggle-settings').click()")
    _js(
        driver,
        f"const m=document.getElementById('max-tokens'); m.value='{max_tokens}';"
        "m.dispatchEvent(new Event('input'));"
        f"const t=document.getElementById('temperature'); t.value='{temperature}';"
        "t.dispatchEvent(new Event('input'));"
        "document.getElementById('toggle-settings').click()",
    )


def test_chat_page_streams_stops_keeps_and_exports(
    server_factory: Callable[..., ServerProcess], browser: object, tmp_path: Path
) -> None:
    srv = server_factory("--n-ctx", "2048")
    driver = browser
    driver.get(srv.base_url + "/")  # type: ignore[attr-defined]
    _wait(lambda: _js(driver, "return document.body.dataset.ready"), "the model list")
    options = _js(driver, "return [...document.getElementById('model').options].map(o=>o.value)")
    assert options == ["gemma-3-270m"] or "gemma-3-270m" in options, options  # type: ignore[operator]
    assert "2,048" in str(
        _js(driver, "return document.getElementById('model-context').textContent")
    )

    # A streamed answer: the text grows over time before the end.
    _settings(driver, 96)
    _send(driver, "Write a short story about a lighthouse keeper.")
    _wait(lambda: len(_last_answer_text(driver)) > 0, "the first streamed text")
    sizes = []
    while not _idle(driver):
        sizes.append(len(_last_answer_text(driver)))
        time.sleep(0.05)
    sizes.append(len(_last_answer_text(driver)))
    assert len(set(sizes)) >= 2, f"the answer did not grow while streaming: {sizes}"
    stats = _wait(
        lambda: _js(
            driver,
            "const s=[...document.querySelectorAll('.stats')].pop();"
            "return s && !s.hidden ? s.textContent : ''",
        ),
        "the token figures",
    )
    assert "tokens" in str(stats) and "tok/s" in str(stats) and "cached" in str(stats), stats

    # Stop a long answer: the server's slot is freed.
    _settings(driver, 1800)
    _send(driver, "1, 2, 3, 4, 5, 6, 7, 8,")
    _wait(lambda: _answers(driver) == 2 and len(_last_answer_text(driver)) > 0, "the long answer")
    _wait(lambda: _active_sequences(srv) == 1, "the generation on the server", 30)
    _js(driver, "document.getElementById('stop').click()")
    _wait(lambda: _idle(driver), "the page to stop", 30)
    _wait(lambda: _active_sequences(srv) == 0, "the server to free the slot", 60)
    assert "Stopped" in str(
        _js(driver, "return [...document.querySelectorAll('.stats')].pop().textContent")
    )

    # Reload: the conversation is still there (localStorage).
    driver.refresh()  # type: ignore[attr-defined]
    _wait(lambda: _js(driver, "return document.body.dataset.ready"), "the page after reload")
    assert _answers(driver) == 2
    titles = _js(
        driver, "return [...document.querySelectorAll('.conversation .open')].map(b=>b.textContent)"
    )
    assert titles and "lighthouse" in titles[0], titles  # type: ignore[index]

    # Export as JSON: the downloaded file holds the conversation.
    _js(driver, "document.getElementById('export-json').click()")
    files = _wait(lambda: [p for p in tmp_path.glob("*.json")], "the exported file", 30)
    exported = json.loads(files[0].read_text(encoding="utf-8"))  # type: ignore[index]
    assert exported["model"] == "gemma-3-270m"
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "user", "assistant"]
    assert "lighthouse" in exported["messages"][0]["content"]
    assert exported["messages"][1]["stats"]["completionTokens"] > 0

    if os.environ.get("LOCALLAB_SCREENSHOT"):
        driver.save_screenshot(str(REPO_ROOT / "docs" / "chat-page.png"))  # type: ignore[attr-defined]


def test_chat_page_asks_for_the_api_key(
    server_factory: Callable[..., ServerProcess], browser: object
) -> None:
    srv = server_factory("--n-ctx", "2048", "--api-key", "sekrit")
    driver = browser
    driver.get(srv.base_url + "/")  # type: ignore[attr-defined]
    _wait(
        lambda: _js(driver, "return document.getElementById('key-dialog').open"), "the key dialog"
    )
    _js(
        driver,
        "document.getElementById('key-input').value='sekrit';"
        "document.getElementById('key-save').click()",
    )
    _wait(lambda: _js(driver, "return document.body.dataset.ready"), "the model list")
    assert "gemma-3-270m" in str(_js(driver, "return document.getElementById('model').value"))
    assert _js(driver, "return localStorage.getItem('locallab.apiKey')") == "sekrit"
    _settings(driver, 8)
    _send(driver, "Hello")
    _wait(
        lambda: _answers(driver) == 1 and _idle(driver) and _last_answer_text(driver), "an answer"
    )
    assert not _js(driver, "return document.querySelector('.message.error')")
