"""The app in a real browser: every page renders clean, an upload reaches a fit.

These tests drive headless Chromium against one ``streamlit run`` server (see
conftest.py) and save a 1280x720 screenshot of every page, normal and in lecture mode,
to ``artifacts/screenshots/`` for a person to look at.  What AppTest cannot see is the
point here: the browser's own rendering, the file uploader's real input element,
navigation between pages within one session, and the URL query parameters.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from browser_support import (RUN_TIMEOUT_MS, choose, first_screen_share, fit_on_model_page, page_problems,
                             upload_table, wait_for_app)
from explorer.pages import names

pytestmark = pytest.mark.browser

PAGES = tuple(names())  # every registered page (explorer.pages)

# A student's export from a German-locale spreadsheet: semicolons, decimal commas.
UPLOAD_NAME = "reaction times.csv"
UPLOAD_CSV = "\n".join(
    ["participant;day;rt"]
    + [f"p{p};{d};{200 + 7 * p + (9 + p % 3) * d + (d * p) % 5},{(p * d) % 10}"
       for p in range(1, 7) for d in range(5)]
) + "\n"
UPLOAD_ROWS = 30
UPLOAD_FORMULA = "rt ~ day + (1 | participant)"


def _open(pg, base_url: str, path: str, **query) -> None:
    url = f"{base_url}/{path}"
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    pg.goto(url, wait_until="domcontentloaded")
    wait_for_app(pg)


def _main_text(pg) -> str:
    return pg.locator('[data-testid="stMain"], [data-testid="stMainBlockContainer"]').first \
        .inner_text()


def _assert_clean(pg, server_log, what: str) -> None:
    problems = page_problems(pg, server_log)
    assert not problems, f"{what} shows a problem:\n" + "\n".join(problems)


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
@pytest.mark.parametrize("name", PAGES)
def test_page_renders_clean(page, base_url, server_log, screenshot_dir, name, lecture):
    """Each page loads with the default data and no clicks, shows content and no error."""
    _open(page, base_url, name, **({"lecture": 1} if lecture else {}))
    suffix = "-lecture" if lecture else ""
    page.screenshot(path=str(screenshot_dir / f"{name}{suffix}.png"))
    _assert_clean(page, server_log, f"page {name!r}{' (lecture mode)' if lecture else ''}")
    text = _main_text(page)
    assert len(text.split()) > 20, f"page {name!r} shows almost nothing: {text[:200]!r}"
    if name in ("pooling", "shrinkage", "fit"):
        assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1, \
            f"page {name!r} draws no chart on first load"
    if name == "model":
        # lme4's summary layout is the model page's first output.
        assert "REML criterion at convergence" in text


def test_upload_semicolon_decimal_comma_then_fit(page, base_url, server_log, screenshot_dir):
    """Upload a ';'-separated, decimal-comma CSV, see its preview, then fit it on the
    model page in the same session (navigating by the sidebar, not by URL, which would
    start a new session without the upload)."""
    _open(page, base_url, "dataset")
    upload_table(page, UPLOAD_NAME, UPLOAD_CSV.encode("utf-8"))
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "dataset-upload.png"))
    _assert_clean(page, server_log, "the dataset page after the upload")
    # st.dataframe draws on a canvas; its accessible grid (textContent) holds the cells.
    grid = page.locator('[data-testid="stDataFrame"]').first
    headers = set(grid.locator('[role="columnheader"]').all_text_contents())
    assert {"participant", "day", "rt"} <= headers, f"preview columns: {sorted(headers)}"
    assert "218.1" in grid.text_content(), "rt was not read as a number with a decimal comma"
    assert str(UPLOAD_ROWS) in _main_text(page), "the preview does not give the row count"

    fit_on_model_page(page, UPLOAD_FORMULA)
    page.screenshot(path=str(screenshot_dir / "model-upload.png"))
    _assert_clean(page, server_log, "the model page fitting the uploaded data")
    text = _main_text(page)
    assert "participant" in text and "Number of obs: 30" in text, \
        "the fit on the model page is not the uploaded data's"


def test_shared_link_opens_dataset_and_formula(page, base_url, server_log):
    """A lecturer's link (page, built-in dataset, formula in the query) opens that fit."""
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    _open(page, base_url, "model", dataset="penicillin", formula=formula)
    _assert_clean(page, server_log, "the model page opened from a shared link")
    text = _main_text(page)
    assert "Number of obs: 144, groups:  plate, 24; sample, 6" in text


def test_sidebar_link_reopens_the_same_view(page, base_url, server_log):
    """The link the sidebar offers for sharing opens the same page, dataset and formula
    in a new session (what students get when the lecturer posts it)."""
    formula = "Reaction ~ Days + (1 | Subject)"
    _open(page, base_url, "model", dataset="sleepstudy", formula=formula)
    link = next((t for t in page.locator(
        '[data-testid="stSidebar"] [data-testid="stCode"]').all_inner_texts()
        if t.strip().startswith("http")), None)
    assert link, "the sidebar offers no link to this view"
    link = "".join(link.split())  # the code block wraps long links
    assert link.startswith(base_url + "/model?"), f"the link is for another page: {link}"
    fresh = page.context.browser.new_context(viewport=page.viewport_size)
    try:
        other = fresh.new_page()
        other.goto(link, wait_until="domcontentloaded")
        wait_for_app(other)
        _assert_clean(other, server_log, f"the shared link {link}")
        box = other.locator(".st-key-model-formula input, .st-key-model-formula textarea")
        assert box.first.input_value() == formula
        assert "Number of obs: 180, groups:  Subject, 18" in _main_text(other)
    finally:
        fresh.close()


def _body_font_px(pg) -> float:
    """Computed font size of the main area's first paragraph of text."""
    para = pg.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p').first
    return float(para.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))


def test_lecture_mode_enlarges_text(page, base_url):
    """Lecture mode is for a projector: body text at least 1.2x the normal size."""
    _open(page, base_url, "shrinkage")
    normal = _body_font_px(page)
    _open(page, base_url, "shrinkage", lecture=1)
    lecture = _body_font_px(page)
    assert lecture >= 1.2 * normal, f"lecture font {lecture}px vs normal {normal}px"


def test_lecture_mode_starts_with_the_sidebar_collapsed(page, base_url):
    """At 1280x720 the sidebar takes a quarter of a projector: a lecture link opens with it
    folded away, its arrow still opens it, and a rerun does not fold it again."""
    toggle = page.get_by_text("Lecture mode (projector)")

    def on_screen() -> bool:  # a folded sidebar is moved off the left edge, not hidden
        page.wait_for_timeout(600)  # it slides
        box = toggle.bounding_box()
        return box is not None and box["x"] >= 0

    _open(page, base_url, "shrinkage")
    assert on_screen(), "the sidebar is not open in normal mode"
    _open(page, base_url, "shrinkage", lecture=1)
    assert not on_screen(), "the sidebar is open in lecture mode"
    page.locator('[data-testid="stExpandSidebarButton"]').click()
    assert on_screen(), "the sidebar's arrow does not open it"
    page.get_by_text("SVG", exact=True).click()  # a rerun
    wait_for_app(page)
    assert on_screen(), "a rerun folded the sidebar away again"


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_pvalues_lmertest_layout_and_type_iii_anova(page, base_url, server_log, screenshot_dir,
                                                    lecture):
    """Choosing Satterthwaite prints lmerTest's summary (df, p, stars); the anova tab shows
    the type III table (issue 8)."""
    query = {"dataset": "chickweight", "formula": "weight ~ Time * Diet + (Time | Chick)"}
    if lecture:
        query["lecture"] = 1
    _open(page, base_url, "model", **query)
    page.get_by_text("Satterthwaite", exact=True).first.click()
    wait_for_app(page)
    suffix = "-lecture" if lecture else ""
    page.screenshot(path=str(screenshot_dir / f"model-satterthwaite{suffix}.png"))
    text = _main_text(page)
    assert "t-tests use Satterthwaite's method" in text and "Pr(>|t|)" in text
    _assert_clean(page, server_log, "the Satterthwaite summary")
    page.get_by_role("tab", name="Saved models & anova").click()
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / f"model-anova-type3{suffix}.png"))
    assert "Type III Analysis of Variance Table" in _main_text(page)
    _assert_clean(page, server_log, "the type III anova")


def test_binary_upload_fits_a_glmer_after_the_family_choice(page, base_url, server_log,
                                                            screenshot_dir):
    """A 0/1 response: the model page suggests a binomial model; choosing it prints
    glmer's lme4 summary (the family radio, its suggestion and the glmer output)."""
    from pathlib import Path

    csv = (Path(__file__).resolve().parents[2] / "data" / "bdf.csv").read_bytes()
    _open(page, base_url, "dataset")
    upload_table(page, "bdf.csv", csv)
    fit_on_model_page(page, "repeatgr ~ 1 + ses + minority + (1 | schoolNR)")
    assert "only the values 0 and 1" in _main_text(page)
    page.locator(".st-key-model-family").click()
    page.get_by_role("option", name="binomial (glmer, logit)").click()
    page.get_by_text("Generalized linear mixed model fit by maximum likelihood").first.wait_for()
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "model-glmer.png"), full_page=True)
    _assert_clean(page, server_log, "the model page fitting a binomial glmer")
    text = _main_text(page)
    assert "Family: binomial  ( logit )" in text and "Number of obs: 2283" in text


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_factor_predictor_then_one_click_to_the_paired_t(page, base_url, server_log, screenshot_dir, lecture):
    """df_original with its condition as the pooling predictor: the panels and the
    shrinkage of the intercepts draw clean (screenshots of both pages), and the paired t
    button opens the model page's paired t-test for value ~ condition + (1 | participant)."""
    suffix = "-lecture" if lecture else ""
    _open(page, base_url, "shrinkage", dataset="df_original", **({"lecture": 1} if lecture else {}))
    choose(page, "pool.predictor", "condition (factor)")
    page.screenshot(path=str(screenshot_dir / f"shrinkage-factor{suffix}.png"))
    _assert_clean(page, server_log, "the shrinkage page with a factor predictor")
    if lecture:
        assert first_screen_share(page) >= 0.5
    # the predictor persists across pages (sidebar navigation keeps the session)
    if lecture:
        page.locator('[data-testid="stExpandSidebarButton"]').click()
    page.locator('[data-testid="stSidebarNav"] a[href$="/pooling"]').first.click()
    page.wait_for_url("**/pooling*")
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / f"pooling-factor{suffix}.png"))
    _assert_clean(page, server_log, "the pooling page with a factor predictor")
    assert "value ~ condition + (1 | participant)" in _main_text(page)
    page.get_by_role("button", name="Show the paired t-test on the Model builder page").click()
    page.wait_for_url("**/model*")
    page.get_by_text("paired t-test t").first.wait_for()
    wait_for_app(page)
    _assert_clean(page, server_log, "the model page opened from the pooling page")
    assert page.locator(".st-key-model-formula input").first.input_value() == \
        "value ~ condition + (1 | participant)"


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
@pytest.mark.parametrize("name", ["pooling", "shrinkage"])
def test_binary_data_pooling_pages(page, base_url, server_log, screenshot_dir, name, lecture):
    """bdf (a 0/1 response): glm and glmer on the pooling pages, drawn clean, screenshots."""
    _open(page, base_url, name, dataset="bdf", **({"lecture": 1} if lecture else {}))
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=RUN_TIMEOUT_MS)
    suffix = "-lecture" if lecture else ""
    page.screenshot(path=str(screenshot_dir / f"{name}-bdf{suffix}.png"))
    _assert_clean(page, server_log, f"page {name!r} with bdf{' (lecture mode)' if lecture else ''}")
    assert "glmer" in _main_text(page)


@pytest.mark.parametrize("name", ["pooling", "shrinkage"])
@pytest.mark.parametrize("dataset, words", [("cbpp", "proportion of successes"), ("grouseticks", "Poisson glm")])
def test_binomial_trials_and_poisson_pooling_pages(page, base_url, server_log, screenshot_dir, name, dataset, words):
    """cbpp (cbind(incidence, size - incidence): proportions) and grouseticks (counts) on the
    pooling pages: drawn clean, screenshots."""
    _open(page, base_url, name, dataset=dataset)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / f"{name}-{dataset}.png"))
    _assert_clean(page, server_log, f"page {name!r} with {dataset}")
    text = _main_text(page)
    assert "glmer" in text
    if name == "pooling":
        assert words in text or words in page.locator('[data-testid="stPlotlyChart"]').first.inner_html()


def test_bdf_random_slopes_separation_markers(page, base_url, server_log, screenshot_dir):
    """(1 + ses | schoolNR) on bdf, sorted by shrinkage: the schools without a finite
    no-pooling estimate first, a marker at the panel's edge each; the page lists why."""
    _open(page, base_url, "pooling", dataset="bdf")
    page.locator(".st-key-pool-random").first.click()
    page.get_by_role("option", name="intercept and slope").click()
    wait_for_app(page)
    page.locator(".st-key-pool-sort").first.click()
    page.get_by_role("option", name="largest change, no → partial pooling").click()
    wait_for_app(page)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / "pooling-bdf-separation.png"), full_page=True)
    _assert_clean(page, server_log, "the pooling page with bdf's random slopes")
    assert "38 of 131 groups of schoolNR cannot give their own estimate" in _main_text(page)


def test_fit_page_refuses_a_glmer(page, base_url, server_log, screenshot_dir):
    _open(page, base_url, "fit", dataset="bdf")
    page.get_by_text("has no such criterion").first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / "fit-bdf-glmer.png"))
    _assert_clean(page, server_log, "the fit page with a binomial model")
