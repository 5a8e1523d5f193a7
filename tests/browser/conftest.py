"""Fixtures for the browser tests: one real ``streamlit run`` server and headless Chromium.

The server is started once per test session from the repository root, exactly as
``make run`` starts it, and each test opens its own browser context (a fresh Streamlit
session).  Chromium is Debian's (``/usr/bin/chromium``): Playwright cannot download its
own browsers on machines without internet, so it is launched by path.  Without it the
tests skip, except under ``POOLING_REQUIRE_SYSTEM_TESTS=1`` (set by ``.ci/run``), where a
missing browser fails the build instead of passing silently.
"""

from __future__ import annotations

import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_support import RUN_TIMEOUT_MS, ServerLog

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
SERVER_LOG = ROOT / "artifacts" / "browser-server.log"
VIEWPORT = {"width": 1280, "height": 720}
STARTUP_TIMEOUT_S = 60.0


def _require_system_tests() -> bool:
    return os.environ.get("POOLING_REQUIRE_SYSTEM_TESTS") == "1"


def _missing(reason: str):
    """Skip on a developer machine; fail where the system tests are required (CI)."""
    if _require_system_tests():
        pytest.fail(f"{reason} (POOLING_REQUIRE_SYSTEM_TESTS=1, so this is a failure)",
                    pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_python() -> str:
    """The project's venv python (what ``make run`` uses), else the one running pytest."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _log_tail(lines: int = 40) -> str:
    try:
        return "\n".join(SERVER_LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@pytest.fixture(scope="session")
def streamlit_server():
    """Start ``streamlit run app.py`` on a free port; yield ``(base_url, ServerLog)``."""
    if not (ROOT / "app.py").exists():
        pytest.fail("app.py not found at the repository root", pytrace=False)
    port = _free_port()
    env = dict(os.environ)
    env.pop("POOLING_ACCESS_CODE", None)  # the tests drive an open app
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    cmd = [_server_python(), "-m", "streamlit", "run", "app.py",
           "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    with SERVER_LOG.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode} at start-up:\n"
                            f"{_log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n"
                            f"{_log_tail()}", pytrace=False)
            time.sleep(0.3)
        yield base, ServerLog(SERVER_LOG)
    finally:
        # The process group this fixture started (streamlit and any fit workers it forked).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue


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
