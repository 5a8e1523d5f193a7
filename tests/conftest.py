"""Fixtures shared across test folders.

``chromium``: one headless Debian Chromium, driven through Playwright's sync API, for the
whole test session.  Playwright's sync API runs an event loop in the main thread, so a
second ``sync_playwright()`` in the same session fails; every browser test (tests/browser,
the proxy test) therefore shares this one.  Without Chromium the tests skip, except under
``POOLING_REQUIRE_SYSTEM_TESTS=1`` (set by ``.ci/run``), where a missing browser fails.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from deploy_support import missing

# Tests call explorer helpers (cached with st.cache_data) outside a Streamlit run; Streamlit
# then logs "missing ScriptRunContext" for every call, which buries real output.
logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    """A headless Debian Chromium driven by Playwright, shared by the session's tests."""
    executable = shutil.which("chromium")
    if executable is None:
        missing("chromium is not installed (apt-get install chromium); browser tests skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright python package is not installed (requirements-dev.txt)")
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=executable, headless=True,
                                          args=CHROMIUM_ARGS)
    except Exception as exc:
        manager.stop()
        pytest.fail(f"Chromium at {executable} did not start: {exc}", pytrace=False)
    try:
        yield browser
    finally:
        browser.close()
        manager.stop()
