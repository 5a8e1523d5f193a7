"""The lecture's slides in the app (issue 14), through Streamlit's AppTest: the model as an
equation with its parameter count, the model comparison worked out on the saved-models tab,
and the df.original pictures on the paired tab.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lmmcore
from lmmcore.equation import model_equation
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
