"""Browser fixtures: Debian's Chromium driven by Playwright, and a real `hubsync dashboard` process.

Chromium must be at /usr/bin/chromium (``apt-get install chromium``); Playwright's own browser download is
never used. A missing browser fails these tests loudly: they do not skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsync_sandbox.embedded import free_port
from tests.conftest import run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USERS = {"alice": ("operator", "alice-operator-pw"), "victor": ("viewer", "victor-viewer-pw")}
FLOWER_URL = "http://flower.example.test:5555"


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers (any status), failing with the process's log if it dies first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this test session started."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def dashboard_users(hub_env: dict[str, str]) -> str:
    """HUBSYNC_DASHBOARD_USERS made with `hubsync dashboard-user`, as an operator would."""
    entries = []
    for name, (role, password) in USERS.items():
        made = run_cli(hub_env, "dashboard-user", name, role, stdin=password + "\n")
        assert made.returncode == 0, made.stderr
        entries.append(made.stdout.strip())
    return ",".join(entries)


@pytest.fixture(scope="session")
def dashboard(
    hub_env: dict[str, str], dashboard_users: str, worker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real `hubsync dashboard` process on a free port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    env = {**hub_env, "HUBSYNC_DASHBOARD_USERS": dashboard_users, "HUBSYNC_FLOWER_URL": FLOWER_URL}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "dashboard", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc, log)
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (fails, never skips, when Chromium is missing)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    yield pg
    context.close()


def login(page: Any, base: str, name: str) -> None:
    """Log in through the login form."""
    page.goto(f"{base}/")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(USERS[name][1])
    page.get_by_role("button", name="Log in").click()
    page.get_by_test_id("who").wait_for()
    assert re.search(rf"{name} \({USERS[name][0]}\)", page.get_by_test_id("who").inner_text())
