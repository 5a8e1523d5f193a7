"""The "How the fit works" page in a real browser: each view draws, the slider moves the
groups, and in lecture mode each view's main chart fills half of the first 1280x720 screen.

Screenshots (``artifacts/screenshots/fit-*.png``) are for a person to look at.
"""

from __future__ import annotations

import pytest

from browser_support import first_screen_share, wait_for_app
from test_browser_pages import _assert_clean, _open

pytestmark = pytest.mark.browser

# Dyestuff: intercept only, so the criterion view is the one-knob curve with the slider.
ONE_KNOB = {"dataset": "dyestuff"}
VIEWS = ("The criterion", "REML and ML", "Singular fit")


def _view(pg, label: str) -> None:
    pg.locator('[data-testid="stButtonGroup"] button', has_text=label).first.click()
    wait_for_app(pg)


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
@pytest.mark.parametrize("query", [ONE_KNOB, {}], ids=["one-knob", "three-knobs"])
def test_every_view_draws_and_fills_the_projector(page, base_url, server_log, screenshot_dir, query, lecture):
    _open(page, base_url, "fit", **query, **({"lecture": 1} if lecture else {}))
    tag = ("one" if query else "three") + ("-lecture" if lecture else "")
    for label in VIEWS:
        _view(page, label)
        _assert_clean(page, server_log, f"fit page, view {label!r}")
        assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1, f"view {label!r} draws no chart"
        name = label.split()[-1].lower()
        page.screenshot(path=str(screenshot_dir / f"fit-{tag}-{name}.png"))
        if lecture:
            share = first_screen_share(page)
            assert share >= 0.5, f"view {label!r}: its chart covers {share:.0%} of the first screen"


def test_slider_moves_theta_and_the_text_follows(page, base_url, server_log, screenshot_dir):
    _open(page, base_url, "fit", **ONE_KNOB)
    _view(page, "The criterion")
    slider = page.locator('[data-testid="stSlider"] input').first
    before = slider.get_attribute("aria-valuetext")
    slider.focus()
    page.keyboard.press("Home")        # theta = 0: complete pooling
    wait_for_app(page)
    after = page.locator('[data-testid="stSlider"] input').first.get_attribute("aria-valuetext")
    assert before != after and after.startswith("0"), (before, after)
    _assert_clean(page, server_log, "fit page after the slider moved")
    assert "Every group at θ = 0" in page.locator('[data-testid="stMain"]').first.inner_text()
    page.screenshot(path=str(screenshot_dir / "fit-one-slider-zero.png"), full_page=True)
