"""The Simulate page in a real browser: it renders clean in normal and lecture mode, every
preset can be picked from its menu, "Repeat 200 times" shows its progress and result, and
cross-validation runs.  Screenshots go to artifacts/screenshots/simulate*.png."""

from __future__ import annotations

import pytest

from browser_support import page_problems, wait_for_app
from lmmcore.simulate import PRESETS

pytestmark = pytest.mark.browser


def _open(pg, base_url: str, lecture: bool = False) -> None:
    pg.goto(f"{base_url}/simulate" + ("?lecture=1" if lecture else ""), wait_until="domcontentloaded")
    wait_for_app(pg)


def _assert_clean(pg, server_log, what: str) -> None:
    problems = page_problems(pg, server_log)
    assert not problems, f"{what} shows a problem:\n" + "\n".join(problems)


def _pick(pg, key: str, label: str) -> None:
    """Choose ``label`` in the selectbox with widget key ``key`` as a student would."""
    opener = pg.locator(f".st-key-{key.replace('.', '-')} button[aria-haspopup='listbox']").first
    # A scroll closes the menu: bring the box into view first and let the scrolling end.
    opener.scroll_into_view_if_needed()
    pg.wait_for_timeout(400)
    opener.click()
    pg.locator("[role='option']").filter(has_text=label).first.click()
    wait_for_app(pg)


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_simulate_page_renders_clean(page, base_url, server_log, screenshot_dir, lecture):
    _open(page, base_url, lecture)
    suffix = "-lecture" if lecture else ""
    page.screenshot(path=str(screenshot_dir / f"simulate{suffix}.png"))
    # The main area scrolls inside the page: a full-page shot would not show more.
    for part in ("shrinkage", "panels"):
        page.locator(f".st-key-simulate-{part}").first.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"simulate{suffix}-{part}.png"))
    _assert_clean(page, server_log, "the simulate page")
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 2
    assert page.get_by_text("truth (simulated)").count() >= 1


def test_every_preset_from_the_menu(page, base_url, server_log, screenshot_dir):
    _open(page, base_url)
    for key, preset in PRESETS.items():
        _pick(page, "simulate.preset", preset.title)
        _assert_clean(page, server_log, f"preset {key!r}")
        assert page.get_by_text(preset.explanation[:40]).count() == 1, key
        page.locator(".st-key-simulate-shrinkage").first.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"simulate-preset-{key}.png"))


def _run(pg, server_log, screenshot_dir, button: str, done_text: str, chart: str, name: str) -> None:
    """Press a run button, wait for its result, check the page and photograph the chart."""
    pg.locator(f".st-key-simulate-{button} button").click()
    pg.get_by_text(done_text).first.wait_for(timeout=120_000)
    wait_for_app(pg)
    _assert_clean(pg, server_log, name)
    pg.locator(f".st-key-simulate-{chart}").first.scroll_into_view_if_needed()
    pg.screenshot(path=str(screenshot_dir / f"simulate-{name}.png"))


def test_repeat_then_cross_validate(page, base_url, server_log, screenshot_dir):
    _open(page, base_url)
    _run(page, server_log, screenshot_dir, "repeat_button", "of the 200 runs", "repeat_chart", "repeat")
    page.get_by_role("tab", name="Cross-validation").click()
    wait_for_app(page)
    _run(page, server_log, screenshot_dir, "cv_run", "predicts best here", "cv_chart", "cv")
    page.get_by_role("tab", name="Power").click()
    wait_for_app(page)
    page.locator(".st-key-simulate-power_run button").click()
    page.get_by_text("Monte Carlo error").first.wait_for(timeout=180_000)
    wait_for_app(page)
    _assert_clean(page, server_log, "power")
    page.get_by_text("Monte Carlo error").first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "simulate-power.png"))
