"""Waiting for Streamlit and reading a page for errors, shared by the browser tests.

Streamlit renders asynchronously over a websocket: a page is "done" only when the
script run has finished and its charts have drawn.  These helpers encode that, and what
counts as an error on a page, in one place.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

# A page's script, fits included, must finish within this (ms); generous for a loaded
# 2-core CI machine, small enough that a hung page fails rather than stalls the suite.
RUN_TIMEOUT_MS = 45_000


class ServerLog:
    """The server's combined output, read incrementally so each test sees only its own."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode("utf-8", errors="replace")


APP = '[data-testid="stApp"]'
IDLE = f'{APP}[data-test-script-state="notRunning"]'


def wait_for_app(pg, settle_ms: int = 600, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until Streamlit has finished running the page and the output has settled.

    ``data-test-script-state`` on the app root is Streamlit's own run state (the
    attribute its end-to-end tests use).  A page may rerun right after its first run
    (query parameters, ``st.rerun``), so the idle state must hold for ``settle_ms``.
    Charts draw after the run ends: wait for every Plotly chart's SVG as well.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    pg.wait_for_selector(IDLE, timeout=timeout_ms, state="attached")
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < settle_ms / 1000:
        if time.monotonic() > deadline:
            raise AssertionError("the page kept rerunning")
        state = pg.get_attribute(APP, "data-test-script-state")
        if state != "notRunning":
            pg.wait_for_selector(IDLE, timeout=max(1, int((deadline - time.monotonic()) * 1000)),
                                 state="attached")
            stable_since = time.monotonic()
        pg.wait_for_timeout(100)
    for chart in pg.locator('[data-testid="stPlotlyChart"]').all():
        chart.locator(".main-svg").first.wait_for(state="attached", timeout=timeout_ms)
    pg.locator('[data-testid="stSkeleton"]').first.wait_for(state="detached", timeout=timeout_ms)
    # Icons are a web font (Material Symbols): a screenshot before it loads shows boxes.
    pg.evaluate("document.fonts.ready.then(() => true)")


# Python exception names ("ValueError", "KeyError: 'x'") and tracebacks; "Std. Error" in
# lme4's fixed-effects table is legitimate output and is not matched.
EXCEPTION_TEXT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(Error|Exception)\b"
                            r"|^Error\b|\bError:", re.MULTILINE)
# Markdown escapes that reached the screen: text escaped twice, or escaped inside a code
# span, shows students "Reaction \~ Days \+ \(Days \| Subject\)".
VISIBLE_ESCAPE = re.compile(r"\\[~+()|*_\[\]`#<>{}!-]")


def page_problems(pg, server_log: ServerLog | None = None) -> list[str]:
    """Everything on the page (and in the server log since the test began) that says
    something went wrong; an empty list for a clean page."""
    problems = []
    for testid in ("stException", "stAlertContentError"):
        for element in pg.locator(f'[data-testid="{testid}"]').all():
            problems.append(f"{testid}: {element.inner_text()[:300]!r}")
    for dialog in pg.locator('[role="dialog"]').all():
        if "not found" in dialog.inner_text().lower():
            problems.append(f"dialog: {dialog.inner_text()[:200]!r}")
    text = pg.locator(APP).inner_text()
    for pattern, what in ((EXCEPTION_TEXT, "exception text"),
                          (VISIBLE_ESCAPE, "markdown escape shown as text")):
        for match in pattern.finditer(text):
            start = max(0, match.start() - 80)
            problems.append(f"{what}: {text[start:match.end() + 80]!r}")
    if server_log is not None:
        log = server_log.since_mark()
        if "Traceback" in log:
            problems.append(f"server log has a traceback:\n{log[-2000:]}")
    problems.extend(f"javascript error: {e[:300]}" for e in getattr(pg, "console_errors", []))
    return problems


PROJECTOR = (1280, 720)  # lecture mode's screen: tests/browser/conftest.py's viewport


def first_screen_share(pg, chart=None) -> float:
    """The share of the first 1280x720 screen covered by ``chart`` (a locator; by default
    the page's first Plotly chart): its bounding box clipped to the viewport, with every
    scrolled area back at the top."""
    pg.evaluate("() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    pg.wait_for_timeout(200)
    chart = chart if chart is not None else pg.locator('[data-testid="stPlotlyChart"]').first
    box = chart.bounding_box()
    assert box is not None, "no chart on the page"
    width, height = PROJECTOR
    visible_w = max(0.0, min(box["x"] + box["width"], width) - max(box["x"], 0.0))
    visible_h = max(0.0, min(box["y"] + box["height"], height) - max(box["y"], 0.0))
    return visible_w * visible_h / (width * height)


def upload_table(pg, name: str, data: bytes, mime: str = "text/csv") -> None:
    """Upload a file through the Dataset page's uploader and wait until the app shows it."""
    uploader = pg.locator('[data-testid="stFileUploaderDropzoneInput"]').first
    uploader.set_input_files({"name": name, "mimeType": mime, "buffer": data})
    pg.get_by_text(name, exact=False).first.wait_for()
    wait_for_app(pg)


def fit_on_model_page(pg, formula: str) -> None:
    """Go to the model page by the sidebar (a URL would start a new session, without the
    upload), type the formula and wait for lme4's summary."""
    pg.locator('[data-testid="stSidebarNav"] a[href$="/model"], '
               '[data-testid="stSidebarNav"] a[href*="/model?"]').first.click()
    pg.wait_for_url("**/model*")
    wait_for_app(pg)
    box = pg.locator(".st-key-model-formula input").first
    box.fill(formula)
    box.press("Enter")
    pg.get_by_text("REML criterion at convergence").first.wait_for()
    wait_for_app(pg)


def run_bootstrap(pg, samples: int) -> None:
    """On the model page's open Intervals tab: choose the parametric bootstrap, ``samples``
    samples, press Run and wait for the refits to finish."""
    pg.get_by_text("Parametric bootstrap").click()
    wait_for_app(pg)
    box = pg.get_by_label("Bootstrap samples")
    box.fill(str(samples))
    box.press("Enter")
    wait_for_app(pg)
    pg.get_by_role("button", name="Run", exact=True).click()
    wait_for_app(pg, timeout_ms=120_000)


def choose(pg, key: str, option: str) -> None:
    """Pick ``option`` in the selectbox with session-state key ``key`` (its element carries
    the class ``st-key-<key with dots as dashes>``) and wait for the rerun."""
    pg.locator(f".st-key-{key.replace('.', '-')} [role='combobox']").first.click()
    pg.get_by_role("option", name=option, exact=True).click()
    wait_for_app(pg)


def student_session(chromium, base: str, screenshot, csv_name: str, csv: bytes, formula: str,
                    rows: int, timeout_ms: int = 45_000) -> tuple[str, list, list]:
    """One student in a fresh browser context: open the dataset page at ``base``, upload
    ``csv``, fit ``formula`` on the model page and wait for lme4's "Number of obs: rows".

    Returns the main area's text, the context's cookies and :func:`page_problems`; a
    screenshot goes to ``screenshot``.  The context is closed before returning.
    """
    context = chromium.new_context(viewport={"width": 1280, "height": 720})
    try:
        context.set_default_timeout(timeout_ms)
        page = context.new_page()
        page.goto(f"{base}/dataset", wait_until="domcontentloaded")
        wait_for_app(page)
        upload_table(page, csv_name, csv)
        fit_on_model_page(page, formula)
        page.get_by_text(f"Number of obs: {rows}").first.wait_for()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        text = page.locator('[data-testid="stMain"]').first.inner_text()
        return text, context.cookies(), page_problems(page)
    finally:
        context.close()
