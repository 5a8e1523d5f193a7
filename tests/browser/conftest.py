"""Fixtures for the browser tests: one real ``streamlit run`` server, one browser context a test.

The server is started once per test session from the repository root, exactly as
``make run`` starts it, and each test opens its own browser context (a fresh Streamlit
session).  Chromium is Debian's (``/usr/bin/chromium``): Playwright cannot download its
own browsers on machines without internet, so it is launched by path (the ``chromium``
fixture in tests/conftest.py; the server helpers are tests/deploy_support.py's).  Without it
the tests skip, except under ``POOLING_REQUIRE_SYSTEM_TESTS=1`` (set by ``.ci/run``), where a
missing browser fails the build instead of passing silently.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from browser_support import RUN_TIMEOUT_MS, ServerLog
from deploy_support import free_port, server_python, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
SERVER_LOG = ROOT / "artifacts" / "browser-server.log"
VIEWPORT = {"width": 1280, "height": 720}


@pytest.fixture(scope="session")
def streamlit_server():
    """Start ``streamlit run app.py`` on a free port; yield ``(base_url, ServerLog)``."""
    if not (ROOT / "app.py").exists():
        pytest.fail("app.py not found at the repository root", pytrace=False)
    port = free_port()
    env = dict(os.environ)
    env.pop("POOLING_ACCESS_CODE", None)  # the tests drive an open app
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    cmd = [server_python(), "-m", "streamlit", "run", "app.py",
           "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    with SERVER_LOG.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(f"{base}/_stcore/health", proc, SERVER_LOG)
        except RuntimeError as exc:
            pytest.fail(f"streamlit did not start: {exc}", pytrace=False)
        yield base, ServerLog(SERVER_LOG)
    finally:
        # The process group this fixture started (streamlit and any fit workers it forked).
        stop(proc)


@pytest.fixture
def page(chromium, streamlit_server):
    """A fresh browser context (a new Streamlit session) at 1280x720."""
    _, log = streamlit_server
    log.mark()
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(RUN_TIMEOUT_MS)
    pg = context.new_page()
    console_errors = []
    pg.on("pageerror", lambda exc: console_errors.append(str(exc)))
    pg.console_errors = console_errors
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def base_url(streamlit_server) -> str:
    return streamlit_server[0]


@pytest.fixture
def server_log(streamlit_server) -> ServerLog:
    return streamlit_server[1]


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
