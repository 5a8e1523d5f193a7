"""The Model page's Intervals, Predictions and Model checks tabs in a real browser, normal
and lecture mode: each renders clean (screenshots in ``artifacts/screenshots/``), and the
bootstrap runs to a result from its Run button."""

from __future__ import annotations

import pytest

from browser_support import page_problems, run_bootstrap, wait_for_app

pytestmark = pytest.mark.browser


def _open_tab(pg, name: str) -> None:
    pg.get_by_role("tab", name=name).click()
    wait_for_app(pg)


def _assert_clean(pg, server_log, what: str) -> None:
    problems = page_problems(pg, server_log)
    assert not problems, f"{what} shows a problem:\n" + "\n".join(problems)


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_inference_tabs_render_clean(page, base_url, server_log, screenshot_dir, lecture):
    page.goto(f"{base_url}/model" + ("?lecture=1" if lecture else ""), wait_until="domcontentloaded")
    wait_for_app(page)
    suffix = "-lecture" if lecture else ""
    for tab, shot in (("Intervals", "intervals"), ("Predictions", "predictions"),
                      ("Model checks", "checks")):
        _open_tab(page, tab)
        _assert_clean(page, server_log, f"{tab}{suffix}")
        main = page.locator('[data-testid="stMain"]').first
        if tab == "Intervals":
            page.locator('[data-testid="stDataFrame"], [data-testid="stTable"]').first \
                .scroll_into_view_if_needed()
        if tab == "Predictions":
            assert "373" in main.inner_text()
            page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
        if tab == "Model checks":
            assert "Cook's distance" in main.inner_text()
            page.locator('[data-testid="stPlotlyChart"]').nth(4).scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"model-{shot}{suffix}.png"))
    _open_tab(page, "Intervals")
    run_bootstrap(page, 100)
    _assert_clean(page, server_log, f"bootstrap{suffix}")
    assert "Density of the bootstrap estimates" in page.locator('[data-testid="stMain"]').first.inner_text()
    page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / f"model-bootstrap{suffix}.png"))
