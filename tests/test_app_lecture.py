"""The lecture's slides in the app (issue 14), through Streamlit's AppTest: the model as an
equation with its parameter count, the model comparison worked out on the saved-models tab,
and the df.original pictures on the paired tab.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lmmcore
from lmmcore.equation import model_equation
from explorer import state as S
from explorer.pages import names
from test_app_pages import FIXTURES, ROOT, _app, _codes, _figures, _problems, _save, _section

LECTURE_REF = json.loads((FIXTURES / "lecture" / "lm_comparisons.json").read_text())


def _latex(at) -> list:
    """The LaTeX of each st.latex block (Streamlit wraps it in $$ ... $$)."""
    return [str(el.value).strip().removeprefix("$$").removesuffix("$$").strip() for el in at.latex]


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_equation_tab_shows_the_model_and_its_count(lecture):
    at = _app("model", **{"data.key": "sleepstudy", **({"app.lecture": True} if lecture else {})})
    at.text_input(key="model.formula").set_value("Reaction ~ Days + (Days | Subject)").run()
    at = _section(at, "Equation")
    assert _problems(at) == []
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", pd.read_csv(ROOT / "data" / "sleepstudy.csv"),
                       categorical=["Subject"])
    assert _latex(at) == list(model_equation(fit).lines)
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "2 fixed effects + 3 variance-covariance + 1 residual = 6" in text
    assert "24.74" in text and "0.06555" in text  # sd of the intercept, the correlation
    # the lm with the same fixed effects: 3 parameters
    at.radio(key="model.equation_of").set_value("lm").run()
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "2 fixed effects + 0 variance-covariance + 1 residual = 3" in text


def test_saved_lm_models_show_pre_f_and_worked_criteria():
    case = LECTURE_REF["sleepstudy_days"]
    at = _section(_app("model", **{"data.key": "sleepstudy"}), "Saved models & anova")
    _save(at, "compact", "Reaction ~ 1 + (1 | Subject)", "lm")
    _save(at, "augmented", "Reaction ~ Days + (1 | Subject)", "lm")
    assert _problems(at) == []
    latex = "\n".join(_latex(at))
    assert f"= {case['pre']:.4f}" in latex  # PRE = 1 - SSE_A / SSE_C
    assert f"= {case['F']:.4f}" in latex    # F from PRE
    assert case["printed"] in _codes(at)     # R's anova(lm_c, lm_a), line for line
    for aic, bic in zip(case["aic"], case["bic"]):
        assert f"= {aic:.2f}" in latex and f"= {bic:.2f}" in latex


def test_lm_against_lmer_explains_the_ml_refit_and_works_out_aic():
    case = LECTURE_REF["df_original_lm_vs_lmer"]
    at = _section(_app("model", **{"data.key": "df_original"}), "Saved models & anova")
    _save(at, "m_lmer", "value ~ condition + (1 | participant)", "lmer")
    _save(at, "m_lm", "value ~ condition + (1 | participant)", "lm")
    assert _problems(at) == []
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "Why the lmer is refitted with ML here" in text
    latex = "\n".join(_latex(at))
    for k, aic, bic in zip(case["npar"], case["AIC"], case["BIC"]):
        assert f"k = {k}" in latex
        assert f"= {aic:.2f}" in latex and f"= {bic:.2f}" in latex


def test_paired_tab_draws_the_lecture_pictures():
    at = _section(_app("model", **{"data.key": "df_original"}), "Paired t-test")
    assert _problems(at) == []
    figures = _figures(at)
    titles = [" / ".join(a.get("text", "") for a in f["layout"].get("annotations", [])) for f in figures]
    assert any("lm: one prediction per condition" in t for t in titles)
    assert any("lm residuals" in t and "lmer residuals" in t for t in titles)
    predictions = next(f for f, t in zip(figures, titles) if "one prediction" in t)
    # the lmer panel: one line per participant (20), the lm panel: one line through two points
    lines = [t for t in predictions["data"] if "lines" in (t.get("mode") or "")]
    assert len(lines) == 1 + 20
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "What is left over" in text


def test_no_pictures_without_the_paired_design():
    at = _section(_app("model", **{"data.key": "sleepstudy"}), "Paired t-test")
    assert _problems(at) == []
    assert not any("one prediction" in json.dumps(f["layout"]) for f in _figures(at))
    assert any("measured once in each of two conditions" in str(c.value) for c in at.caption)


# ------------------------------------------------------------------ tables in the large font

def _tables_app(rows: int, columns: int, page_key: str | None, lecture: bool = True):
    """One explorer.tables.table of ``rows`` x ``columns`` numbers, in lecture mode or not."""
    def script(rows, columns, page_key, lecture):
        import numpy as np
        import pandas as pd
        import streamlit as st

        from explorer.state import APP_LECTURE
        from explorer.tables import table

        st.session_state[APP_LECTURE] = lecture
        table(pd.DataFrame(np.arange(rows * columns, dtype=float).reshape(rows, columns) + 0.5,
                           columns=[f"column {j}" for j in range(columns)]), page_key=page_key)

    at = AppTest.from_function(script, args=(rows, columns, page_key, lecture), default_timeout=30)
    return at.run()


def test_lecture_tables_are_large_paged_or_scroll_never_the_grid():
    """The grid's canvas font cannot be enlarged: in lecture mode a table longer than 25 rows
    is paged when its page gives a page key, and otherwise drawn whole in the large font (in
    a box that scrolls); a wide table is drawn large too.  Normal mode keeps the grid."""
    from explorer.tables import LECTURE_MAX_ROWS

    paged = _tables_app(60, 3, "model.coef_page")
    (shown,) = [t.value for t in paged.table]
    assert len(shown) == LECTURE_MAX_ROWS and len(paged.dataframe) == 0
    assert float(shown.iloc[0, 0]) == 0.5
    paged.number_input(key="model.coef_page").set_value(3).run()
    (shown,) = [t.value for t in paged.table]
    assert len(shown) == 60 - 2 * LECTURE_MAX_ROWS
    whole = _tables_app(60, 3, None)
    assert [len(t.value) for t in whole.table] == [60] and len(whole.dataframe) == 0
    wide = _tables_app(10, 14, None)
    assert [t.value.shape for t in wide.table] == [(10, 14)] and len(wide.dataframe) == 0
    normal = _tables_app(60, 3, "model.coef_page", lecture=False)
    assert len(normal.table) == 0 and len(normal.dataframe) == 1


# The key of each page's open tab or view (st.tabs, st.segmented_control).
VIEW_KEYS = {"model": S.MODEL_SECTION, "simulate": S.SIM_SECTION, "fit": S.FIT_SECTION}
# ChickWeight's 50 chicks give tables longer than a projector's page.
CHICKS = {"data.key": "chickweight", "app.lecture": True, "model.formula": "weight ~ Time + (1 | Chick)"}


@pytest.mark.parametrize("name", names())
def test_lecture_mode_shows_no_table_in_the_small_grid(name):
    """Every page and every tab or view on it, in lecture mode with ChickWeight (50 chicks):
    no table is drawn in the data grid's small font; the long ones (the dataset, coef(),
    the pooling estimates, the influence of each chick) are paged."""
    at = _app(name, **CHICKS)
    views = [t.label for t in at.tabs]
    if not views and name in VIEW_KEYS:
        views = list(at.segmented_control(key=VIEW_KEYS[name]).options)
    assert not views or name in VIEW_KEYS, f"page {name!r} has views: add its key to VIEW_KEYS"
    paged = set()
    for view in views or [None]:
        if view is not None:
            at.session_state[VIEW_KEYS[name]] = view
            at.run()
        where = f"{name} / {view}" if view else name
        assert _problems(at) == [], where
        assert len(at.dataframe) == 0, f"{where}: a table in the grid's small font"
        pages = [n for n in at.number_input if (n.key or "").endswith("_page") and n.label.startswith("Page (1–")]
        paged |= {f"{where}: {n.key}" for n in pages}
        for n in pages:  # a page holds at most LECTURE_MAX_ROWS rows
            assert n.label == f"Page (1–{int(n.max)})" and n.max > 1, where
    expected = {"dataset": {"dataset: data.preview_page"},
                "model": {"model / Tables: model.coef_page", "model / Model checks: model.influence_page"},
                "pooling": {"pooling: pool.table_page"}}.get(name, set())
    assert expected <= paged, f"not paged: {sorted(expected - paged)}"
