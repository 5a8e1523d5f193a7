"""The model page's p-values (lmerTest's layout, Satterthwaite / Kenward-Roger), the type III
anova, R² and "reproduce this", through Streamlit's AppTest, against lmmcore and frozen R text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app_pages import _codes, _problems, _section

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PRINTED = ROOT / "tests" / "fixtures" / "inference" / "printed_sleepstudy_slope.txt"


def _model_page(lecture: bool = False, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.selectbox(key="data.key").set_value("sleepstudy").run()
    at.session_state["model.formula"] = "Reaction ~ Days + (Days | Subject)"
    at.session_state["app.lecture"] = lecture
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("app_pages/model.py")
    return at.run()


def _r_section(name: str) -> list:
    text = PRINTED.read_text()
    return dict(re.findall(r"#### (\w+)\n(.*?)(?=\n#### |\Z)", text, re.S))[name].split("\n")


@pytest.mark.parametrize("lecture", [False, True])
def test_pvalue_choice_switches_to_lmertest_layout(lecture):
    at = _model_page(lecture)
    assert not _problems(at)
    radio = at.radio(key="model.ddf")
    assert radio.value == "lme4"
    lmer_text = str(at.code[0].value)
    assert "['lmerMod']" in lmer_text and "Pr(>|t|)" not in lmer_text
    for ddf, key in [("satterthwaite", "summary_satterthwaite"),
                     ("kenward-roger", "summary_kenward_roger")]:
        at.radio(key="model.ddf").set_value(ddf).run()
        assert not _problems(at)
        codes = _codes(at)
        want = _r_section(key)
        # the title, the fixed-effects table (df, p, stars) and the legend as lmerTest prints them
        for line in want[:2] + want[want.index("Fixed effects:"):want.index("Fixed effects:") + 6]:
            assert line in codes, line
        captions = " ".join(str(c.value) for c in at.caption)
        assert "fractional" in captions and "Here " in captions and "17.00" in captions


def test_anova_tab_shows_type_iii_table():
    at = _model_page(**{"model.ddf": "kenward-roger"})
    _section(at, "Saved models & anova")
    assert not _problems(at)
    codes = _codes(at)
    for line in _r_section("anova_kenward_roger"):
        assert line in codes, line


def test_anova_tab_for_a_factor_model_tests_terms_jointly():
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.selectbox(key="data.key").set_value("ChickWeight").run()
    at.session_state["model.formula"] = "weight ~ Time * Diet + (Time | Chick)"
    at.switch_page("app_pages/model.py")
    at.run()
    _section(at, "Saved models & anova")
    assert not _problems(at)
    codes = _codes(at)
    assert "Type III Analysis of Variance Table with Satterthwaite's method" in codes
    assert re.search(r"^Diet\s+\S+\s+\S+\s+3 ", codes, re.M)


def test_tables_tab_shows_r2():
    import lmmcore
    import pandas as pd

    at = _model_page()
    _section(at, "Tables")
    assert not _problems(at)
    metrics = {m.label: m.value for m in at.metric}
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", data, categorical=["Subject"])
    r2 = lmmcore.r2(fit)
    assert metrics["marginal: fixed effects"] == f"{r2['marginal']:.3f}" == "0.279"
    assert metrics["conditional: fixed + random"] == f"{r2['conditional']:.3f}" == "0.799"


def test_reproduce_gains_lmertest_and_performance_calls():
    at = _model_page(**{"model.ddf": "satterthwaite"})
    _section(at, "Reproduce this")
    assert not _problems(at)
    codes = _codes(at)
    assert "library(lmerTest)" in codes and 'summary(fit, ddf = "Satterthwaite")' in codes
    assert 'anova(fit, ddf = "Satterthwaite")' in codes and "r2_nakagawa(fit)" in codes
    assert 'fit.coef_table(ddf="satterthwaite")' in codes and "lmmcore.r2(fit)" in codes


def test_kenward_roger_on_an_ml_fit_says_why_not():
    at = _model_page(**{"model.method": "ML"})
    at.radio(key="model.ddf").set_value("kenward-roger").run()
    errors = " ".join(str(e.value) for e in at.error)
    assert not at.exception
    assert "only available for REML" in errors
