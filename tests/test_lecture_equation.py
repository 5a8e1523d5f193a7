"""The lecture's slides from a fitted model (issue 14): equations, parameter counts, and the
model comparison worked out, against hand-written equations and R's numbers
(tests/fixtures/lecture/lm_comparisons.json, made by gen_lecture.R beside it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmcore
from lmmcore.compare import compare_lm, information_criteria
from lmmcore.printing import format_lm_comparison
from lmmcore.equation import latex_text, model_equation

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((ROOT / "tests" / "fixtures" / "lecture" / "lm_comparisons.json").read_text())


def _data(name):
    return pd.read_csv(ROOT / "data" / f"{name}.csv")


def _factors(case):
    f = case["factors"]
    return f if isinstance(f, list) else [f]


N = r"\mathcal{N}"


@pytest.mark.parametrize("formula, expected", [
    ("Reaction ~ Days + (1 | Subject)", [
        r"\text{Reaction}_{ij} = \beta_{0} + \beta_{1} \text{Days}_{ij} + u_{i} + \varepsilon_{ij}",
        rf"u_{{i}} \sim {N}(0,\ \sigma_{{u}}^2)",
        rf"\varepsilon_{{ij}} \sim {N}(0,\ \sigma^2)",
    ]),
    ("Reaction ~ Days + (Days | Subject)", [
        r"\text{Reaction}_{ij} = \beta_{0} + \beta_{1} \text{Days}_{ij} + u_{0i} + u_{1i} \text{Days}_{ij}"
        r" + \varepsilon_{ij}",
        r"\begin{pmatrix}u_{0i} \\ u_{1i}\end{pmatrix} \sim " + N + r"\left(\begin{pmatrix}0 \\ 0"
        r"\end{pmatrix},\ \begin{pmatrix}\sigma_{u0}^2 & \rho_{u01} \sigma_{u0} \sigma_{u1} \\ "
        r"\rho_{u01} \sigma_{u1} \sigma_{u0} & \sigma_{u1}^2\end{pmatrix}\right)",
        rf"\varepsilon_{{ij}} \sim {N}(0,\ \sigma^2)",
    ]),
    ("Reaction ~ Days + (Days || Subject)", [
        r"\text{Reaction}_{ij} = \beta_{0} + \beta_{1} \text{Days}_{ij} + u_{0i} + u_{1i} \text{Days}_{ij}"
        r" + \varepsilon_{ij}",
        rf"u_{{0i}} \sim {N}(0,\ \sigma_{{u0}}^2)",
        rf"u_{{1i}} \sim {N}(0,\ \sigma_{{u1}}^2)",
        r"u_{0i}, u_{1i}\ \text{independent}",
        rf"\varepsilon_{{ij}} \sim {N}(0,\ \sigma^2)",
    ]),
])
def test_sleepstudy_equations(formula, expected):
    fit = lmmcore.lmer(formula, _data("sleepstudy"), categorical=["Subject"])
    eq = model_equation(fit)
    assert list(eq.lines) == expected
    assert eq.indices == (("i", "Subject"), ("j", "observation within Subject i"))
    assert eq.counts["total"] == fit.npar


def test_lecture_df_original_lm_and_lmer():
    """The lecture's slide: value_ij = b0 + b1 condition_ij + U_i + e_ij, 3 vs 4 parameters."""
    data = _data("df_original")
    lm_fit = lmmcore.lm("value ~ condition", data, categorical=["condition", "participant"])
    lmer_fit = lmmcore.lmer("value ~ condition + (1 | participant)", data,
                            categorical=["condition", "participant"])
    lm_eq, lmer_eq = model_equation(lm_fit), model_equation(lmer_fit)
    assert lm_eq.lines == (
        r"\text{value}_{i} = \beta_{0} + \beta_{1} \text{condition2}_{i} + \varepsilon_{i}",
        rf"\varepsilon_{{i}} \sim {N}(0,\ \sigma^2)")
    assert lmer_eq.lines == (
        r"\text{value}_{ij} = \beta_{0} + \beta_{1} \text{condition2}_{ij} + u_{i} + \varepsilon_{ij}",
        rf"u_{{i}} \sim {N}(0,\ \sigma_{{u}}^2)",
        rf"\varepsilon_{{ij}} \sim {N}(0,\ \sigma^2)")
    assert lm_eq.counts == {"fixed": 2, "variance-covariance": 0, "residual": 1, "total": 3}
    assert lmer_eq.counts == {"fixed": 2, "variance-covariance": 1, "residual": 1, "total": 4}
    table = lmer_eq.symbols.set_index("symbol")
    assert table.loc[r"\beta_{1}", "estimate"] == pytest.approx(lmer_fit.fixef["condition2"])
    assert "condition = 2" in table.loc[r"\beta_{1}", "meaning"]
    assert table.loc[r"\sigma", "estimate"] == pytest.approx(lmer_fit.sigma)
    sd_participant = lmer_fit.varcorr.set_index("grp").loc["participant", "sdcor"]
    assert table.loc[r"\sigma_{u}", "estimate"] == pytest.approx(sd_participant)


def test_crossed_factors_get_two_indices():
    fit = lmmcore.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", _data("Penicillin"))
    eq = model_equation(fit)
    assert eq.lines[0] == r"\text{diameter}_{ijk} = \beta_{0} + u_{i} + v_{j} + \varepsilon_{ijk}"
    assert eq.lines[1:3] == (rf"u_{{i}} \sim {N}(0,\ \sigma_{{u}}^2)", rf"v_{{j}} \sim {N}(0,\ \sigma_{{v}}^2)")
    assert eq.indices == (("i", "plate"), ("j", "sample"), ("k", "observation"))
    assert eq.counts["total"] == fit.npar == 4


def test_nested_factor_shows_the_nesting():
    fit = lmmcore.lmer("strength ~ 1 + (1 | batch/cask)", _data("Pastes"))
    eq = model_equation(fit)
    # cask within batch carries batch's index: v_ij; batch is u_i.
    assert eq.lines[0] == r"\text{strength}_{ijk} = \beta_{0} + u_{i} + v_{ij} + \varepsilon_{ijk}"
    assert rf"u_{{i}} \sim {N}(0,\ \sigma_{{u}}^2)" in eq.lines
    assert rf"v_{{ij}} \sim {N}(0,\ \sigma_{{v}}^2)" in eq.lines
    assert eq.indices[:2] == (("i", "batch"), ("j", "cask within batch i"))
    assert eq.counts["total"] == fit.npar == 4


def test_factor_predictors_and_interactions_named_as_the_coefficient_table():
    fit = lmmcore.lmer("weight ~ Time * Diet + (Time | Chick)", _data("ChickWeight"),
                       categorical=["Diet", "Chick"])
    eq = model_equation(fit)
    line = eq.lines[0]
    for column in ("Diet2", "Diet3", "Diet4"):
        assert latex_text(column) + "_{ij}" in line
    assert r"\beta_{5} \text{Time}_{ij} \cdot \text{Diet2}_{ij}" in line
    fixed = eq.symbols[eq.symbols["kind"] == "fixed effect"]
    assert list(fixed["estimate"]) == pytest.approx(list(fit.fixef))
    assert eq.counts == {"fixed": 8, "variance-covariance": 3, "residual": 1, "total": fit.npar}


def test_names_are_escaped_for_latex():
    assert latex_text("a_b$c{d}") == r"\text{a\_b\$c\{d\}}"
    assert latex_text(r"x\y") == r"\text{x\textbackslash{}y}"
    data = _data("sleepstudy").rename(columns={"Days": "days_of_%sleep"})
    eq = model_equation(lmmcore.lm("Reaction ~ `days_of_%sleep`", data))
    assert r"\text{days\_of\_\%sleep}_{i}" in eq.lines[0]


@pytest.mark.parametrize("name", ["df_original_condition", "sleepstudy_days", "sleepstudy_subject"])
def test_pre_and_f_test_equal_r(name):
    case = REF[name]
    data = _data(case["dataset"])
    cat = _factors(case)
    table = compare_lm(lmmcore.lm(case["compact"], data, categorical=cat),
                       lmmcore.lm(case["augmented"], data, categorical=cat))
    assert table.attrs["PRE"] == pytest.approx(case["pre"], rel=1e-10)
    assert list(table["Res.Df"]) == case["res_df"]
    assert list(table["RSS"]) == pytest.approx(case["rss"], rel=1e-10)
    assert table["F"].iloc[1] == pytest.approx(case["F"], rel=1e-9)
    assert table["Pr(>F)"].iloc[1] == pytest.approx(case["p"], rel=1e-6)
    assert format_lm_comparison(table) == case["printed"] + "\n"
    # F from PRE, as the lecture's recap computes it
    pa, pc, n = table.attrs["PA"], table.attrs["PC"], table.attrs["n"]
    pre = table.attrs["PRE"]
    assert (pre / (pa - pc)) / ((1 - pre) / (n - pa)) == pytest.approx(case["F"], rel=1e-9)


def test_compare_lm_refuses_what_it_cannot_compare():
    data = _data("sleepstudy")
    small, big = lmmcore.lm("Reaction ~ 1", data), lmmcore.lm("Reaction ~ Days", data)
    with pytest.raises(lmmcore.LmmError, match="more coefficients"):
        compare_lm(big, small)
    with pytest.raises(lmmcore.LmmError, match="not an lm"):
        compare_lm(small, lmmcore.lmer("Reaction ~ Days + (1 | Subject)", data))


def test_aic_bic_worked_out_equal_the_anova_table_and_r():
    case = REF["df_original_lm_vs_lmer"]
    data = _data("df_original")
    cat = ["condition", "participant"]
    lmer_fit = lmmcore.lmer("value ~ condition + (1 | participant)", data, categorical=cat)
    lm_fit = lmmcore.lm("value ~ condition", data, categorical=cat)
    table = lmmcore.anova(lmer_fit, lm_fit, names=["m_lmer", "m_lm"])
    worked = information_criteria(table, table.attrs["nobs"])
    np.testing.assert_allclose(worked["AIC"], table["AIC"], rtol=1e-12)
    np.testing.assert_allclose(worked["BIC"], table["BIC"], rtol=1e-12)
    assert list(worked.index) == case["rows"]
    np.testing.assert_allclose(worked["AIC"], case["AIC"], rtol=1e-6)
    np.testing.assert_allclose(worked["BIC"], case["BIC"], rtol=1e-6)
    assert list(worked["k"]) == case["npar"]
    # The parameter count of each equation is anova's npar.
    counts = {"m_lm": model_equation(lm_fit).counts["total"],
              "m_lmer": model_equation(lmer_fit).counts["total"]}
    assert [counts[name] for name in worked.index] == case["npar"]
    # The filled-in formula reproduces the number it shows.
    k, loglik = worked["k"].iloc[0], worked["logLik"].iloc[0]
    assert worked["AIC_worked"].iloc[0] == (
        rf"2 \cdot {k:g} - 2 \cdot ({loglik:.2f}) = {worked['AIC'].iloc[0]:.2f}")
