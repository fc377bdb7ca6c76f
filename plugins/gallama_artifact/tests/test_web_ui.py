"""The artifact web UI in headless Chromium, driven through chromedriver's W3C WebDriver HTTP API (httpx only).

Chromium and chromedriver come from Debian (``chromium``, ``chromium-driver``); when they are missing the test
installs them with apt-get, and is skipped only where apt-get is not available. A screenshot is saved in
``test-output/artifact-ui.png``.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from gallama_core.testing import free_port

OUTPUT = Path(__file__).resolve().parents[3] / "test-output"

ELEMENT = "element-6066-11e4-a52e-4f735da1c8ba"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900"]


def _browser() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    apt = shutil.which("apt-get")
    if not apt:
        pytest.skip("chromium/chromedriver are not installed and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update", "-q"], check=True, env=env)
    subprocess.run([*sudo, apt, "install", "-y", "-q", "chromium", "chromium-driver"], check=True, env=env)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "apt-get installed chromium but the binaries are not on PATH"
    return chromium, driver


class WebDriver:
    def __init__(self, url: str, session: str):
        self.base = f"{url}/session/{session}"
        self.http = httpx.Client(timeout=120)

    def call(self, method: str, path: str, body=None):
        response = self.http.request(method, self.base + path, json=body)
        data = response.json()
        assert response.status_code == 200, data
        return data["value"]

    def find(self, css: str) -> str:
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        return found.get(ELEMENT) or next(iter(found.values()))  # the W3C key, or a legacy one

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self.call("POST", f"/element/{element}/clear", {})
        self.call("POST", f"/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def js(self, script: str, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, limit: float = 600.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"never true: {script}")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))


@pytest.fixture
def browser(tmp_path):
    chromium, driver = _browser()
    port = free_port()
    log = open(tmp_path / "chromedriver.log", "wb")
    process = subprocess.Popen([driver, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    session = None
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/status", timeout=2).json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": [*FLAGS, f"--user-data-dir={profile}"]}}}}
        response = httpx.post(url + "/session", json=caps, timeout=120).json()
        assert "sessionId" in response["value"], response
        session = response["value"]["sessionId"]
        yield WebDriver(url, session)
    finally:
        if session:
            try:
                httpx.delete(f"{url}/session/{session}", timeout=30)
            except httpx.HTTPError:
                pass
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_chat_streams_and_the_artifact_panel_shows_the_artifact(server, browser):
    browser.call("POST", "/url", {"url": server + "/artifact/"})
    browser.wait_for("return document.querySelectorAll('#model option').length > 0")
    assert browser.js("return document.querySelector('#panel').classList.contains('empty')")
    browser.type("#temperature", "0")
    browser.type("#max-tokens", "48")
    browser.type("#prefix", 'Here it is. <artifact identifier="hello-python" type="code" language="python" '
                            'title="Hello world in Python">')
    browser.type("#prompt", "Write hello world in python")
    browser.click("#send")
    # the card appears while streaming; then the answer completes and the send button comes back
    browser.wait_for("return document.querySelector('.msg.assistant .artifact-card') !== null")
    browser.wait_for("return !document.querySelector('#send').disabled")
    assert browser.js("return document.querySelector('.msg.error')") is None
    panel = browser.js("""
        const a = document.querySelector('#artifact-view .artifact');
        return a && {identifier: a.dataset.identifier, type: a.dataset.type,
                     title: a.querySelector('h2').textContent, code: a.querySelector('pre code').textContent,
                     tabs: [...document.querySelectorAll('#tabs button')].map(b => b.textContent),
                     empty: document.querySelector('#panel').classList.contains('empty')}""")
    assert panel, "no artifact in the side panel"
    assert panel["identifier"] == "hello-python" and panel["type"] == "code"
    assert panel["title"] == "Hello world in Python" and panel["tabs"] == ["Hello world in Python"]
    assert panel["code"].strip() and "<artifact" not in panel["code"] and "</artifact>" not in panel["code"]
    assert not panel["empty"]
    chat = browser.js("return document.querySelector('.msg.assistant').innerText")
    assert chat.startswith("Here it is.") and "<artifact" not in chat
    assert browser.js("return document.querySelector('.msg.user').textContent") == "Write hello world in python"
    browser.screenshot(OUTPUT / "artifact-ui.png")
    assert (OUTPUT / "artifact-ui.png").stat().st_size > 10_000
