"""The lecture's slides in a real browser (issue 14): the model's equation is readable on a
1280x720 projector in lecture mode, and the df.original pictures draw."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from browser_support import page_problems, wait_for_app

pytestmark = pytest.mark.browser

SLEEPSTUDY_SLOPES = "Reaction ~ Days + (Days | Subject)"
PAIRED = "value ~ condition + (1 | participant)"


def _open_tab(pg, base_url: str, tab: str, **query) -> None:
    pg.goto(f"{base_url}/model?" + urlencode(query, quote_via=quote), wait_until="domcontentloaded")
    wait_for_app(pg)
    pg.get_by_role("tab", name=tab).click()
    wait_for_app(pg)


def test_equation_is_readable_on_a_projector(page, base_url, server_log, screenshot_dir):
    _open_tab(page, base_url, "Equation", dataset="sleepstudy", formula=SLEEPSTUDY_SLOPES, lecture=1)
    equations = page.locator(".katex-display")
    equations.first.wait_for()
    page.screenshot(path=str(screenshot_dir / "model-equation-lecture.png"))
    assert equations.count() == 3  # the model, the random effects' distribution, the residual's
    for i in range(3):
        box = equations.nth(i).locator(".katex").first.bounding_box()
        # inside the 1280 px screen, and on the first screen
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1280
        assert box["y"] + box["height"] <= 720
    # the model's line: letters at least 24 px high, readable from the back row
    size = page.evaluate("() => parseFloat(getComputedStyle("
                         "document.querySelector('.katex-display .katex')).fontSize)")
    assert size >= 24
    assert page_problems(page, server_log) == []


def test_paired_pictures_draw(page, base_url, server_log, screenshot_dir):
    _open_tab(page, base_url, "Paired t-test", dataset="df_original", formula=PAIRED)
    page.get_by_text("What is left over").first.wait_for()
    charts = page.locator('[data-testid="stPlotlyChart"]')
    assert charts.count() == 2
    charts.first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "model-paired-pictures.png"))
    assert page_problems(page, server_log) == []
