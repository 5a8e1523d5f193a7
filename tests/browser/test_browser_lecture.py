"""Lecture mode in a real browser, on a 1280x720 projector: the model's equation is readable
(issue 14), the df.original pictures draw, and every page's and tab's main chart fills at
least half of the first screen (issue 11), measured from the chart's bounding box."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from browser_support import PROJECTOR, first_screen_share, page_problems, run_bootstrap, wait_for_app
from explorer.pages import names

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


# ------------------------------------------------------------------ the main chart on the first screen

# A page's views: its tabs (st.tabs) or its segmented control (the fit page's views).
VIEWS = ('[data-testid="stMain"] [role="tab"], '
         '[data-testid="stMain"] button[data-variant="segmented_control"]')
CHART = '[data-testid="stPlotlyChart"]'
# Views that must draw a chart with the default data and no click (so a chart that went
# missing fails here instead of being skipped); every other view is measured when it draws one.
MUST_DRAW = {"model": {"Plots", "Predictions", "Model checks"}, "pooling": {""}, "shrinkage": {""},
             "simulate": {"Simulated groups"},
             "fit": {"The criterion", "REML and ML", "Singular fit"}}


def _open_lecture(pg, base_url: str, name: str, **query) -> None:
    pg.goto(f"{base_url}/{name}?" + urlencode({**query, "lecture": 1}, quote_via=quote),
            wait_until="domcontentloaded")
    wait_for_app(pg)


def _main_chart_share(pg, screenshot) -> float:
    """The first chart's share of the first screen; the first screen photographed."""
    assert pg.viewport_size == {"width": PROJECTOR[0], "height": PROJECTOR[1]}
    share = first_screen_share(pg)
    pg.screenshot(path=str(screenshot))
    return share


@pytest.mark.parametrize("name", names())
def test_main_chart_of_every_page_and_tab_fills_half_the_first_screen(page, base_url, server_log, screenshot_dir, name):
    """Every registered page, and every tab (or view) on it: where it draws a chart with the
    default data, in lecture mode its first chart covers at least half of the first
    1280x720 screen, so the figure everyone came to see needs no scrolling."""
    _open_lecture(page, base_url, name)
    labels = page.locator(VIEWS).all_inner_texts() or [""]
    measured, small = {}, []
    for label in labels:
        if label:
            page.locator(VIEWS).filter(has_text=label).first.click()
            wait_for_app(page)
        problems = page_problems(page, server_log)
        assert not problems, f"{name} / {label!r} in lecture mode:\n" + "\n".join(problems)
        if page.locator(CHART).count() == 0:
            continue
        tag = f"{name}-{label.lower().replace(' ', '_')}" if label else name
        measured[label] = _main_chart_share(page, screenshot_dir / f"{tag}-lecture-first-screen.png")
        if measured[label] < 0.5:
            small.append(f"{name} / {label or 'page'}: {measured[label]:.0%}")
    assert MUST_DRAW.get(name, set()) <= set(measured), f"no chart on {sorted(MUST_DRAW[name] - set(measured))}"
    assert not small, "main charts below half of the first screen: " + "; ".join(small)


def _cross_validate(pg) -> None:
    pg.get_by_text("k-fold", exact=True).click()
    wait_for_app(pg)
    pg.locator(".st-key-simulate-cv_run button").click()
    pg.get_by_text("predicts best here").first.wait_for(timeout=120_000)
    wait_for_app(pg)


# Charts that need other data or a click: (page, query, tab, what to do, what the chart is).
BEHIND_A_CLICK = {
    "model-paired": ("model", {"dataset": "df_original", "formula": PAIRED}, "Paired t-test", None,
                     "What each model predicts"),
    "model-bootstrap": ("model", {}, "Intervals", lambda pg: run_bootstrap(pg, 40),
                        "Density of the bootstrap estimates"),
    "simulate-cv": ("simulate", {}, "Cross-validation", _cross_validate, "predicts best here"),
    "simulate-intercept-only": ("simulate", {}, "Simulated groups",
                                lambda pg: _pick_random(pg, "intercept only"), "Shrinkage with the truth"),
}


def _pick_random(pg, label: str) -> None:
    pg.locator(".st-key-simulate-random [role='combobox']").first.click()
    pg.get_by_role("option", name=label, exact=True).click()
    wait_for_app(pg)


@pytest.mark.parametrize("case", list(BEHIND_A_CLICK))
def test_charts_behind_a_click_fill_half_the_first_screen(page, base_url, server_log, screenshot_dir, case):
    """The same for the charts a student reaches with other data or a click: the paired
    t-test's pictures, the bootstrap's densities, cross-validation's errors and the
    simulated groups with a random intercept only."""
    name, query, tab, act, marker = BEHIND_A_CLICK[case]
    _open_lecture(page, base_url, name, **query)
    page.get_by_role("tab", name=tab).click()
    wait_for_app(page)
    if act is not None:
        act(page)
    page.get_by_text(marker).first.wait_for()
    problems = page_problems(page, server_log)
    assert not problems, f"{case} in lecture mode:\n" + "\n".join(problems)
    share = _main_chart_share(page, screenshot_dir / f"{case}-lecture-first-screen.png")
    assert share >= 0.5, f"{case}: the main chart covers {share:.0%} of the first screen"
