"""lmmcore.teaching: the numbers the pages show beyond the fit itself, against R where R has them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lmmcore
from lmmcore import teaching
from lmmcore.formula_menu import compose_formula, decompose_formula

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def _data(name: str, categorical) -> pd.DataFrame:
    raw = pd.read_csv(ROOT / "data" / f"{name}.csv")
    return teaching.apply_types(raw, teaching.column_types(raw, categorical))


def _ref(path: str) -> dict:
    return json.loads((FIX / path).read_text())


def test_icc_of_dyestuff_is_lme4s_variance_share():
    ref = _ref("lme4/dyestuff.json")
    fit = lmmcore.lmer("Yield ~ 1 + (1 | Batch)", _data("Dyestuff", ["Batch"]))
    vb, vr = ref["varcorr"][0]["vcov"], ref["varcorr"][1]["vcov"]
    assert teaching.icc(fit)["Batch"] == pytest.approx(vb / (vb + vr), rel=1e-4)


def test_icc_is_none_with_a_random_slope():
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", _data("sleepstudy", ["Subject"]))
    assert teaching.icc(fit) is None


def test_icc_of_crossed_factors_shares_one_total():
    ref = _ref("lme4/penicillin_crossed.json")
    fit = lmmcore.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", _data("Penicillin", ["plate", "sample"]))
    total = sum(r["vcov"] for r in ref["varcorr"])
    expected = {r["grp"]: r["vcov"] / total for r in ref["varcorr"] if r["grp"] != "Residual"}
    got = teaching.icc(fit)
    for g, v in expected.items():
        assert got[g] == pytest.approx(v, rel=1e-3)


def test_paired_comparison_equals_r_paired_t_and_lmer_t():
    ref = _ref("r/paired_t_df_original.json")
    data = _data("df_original", ["participant", "condition"])
    fit = lmmcore.lmer(ref["lmer_formula"], data)
    res = teaching.paired_comparison(fit, data)
    assert res["coefficient"] == "condition2"
    assert res["paired_t"] == pytest.approx(ref["t"], rel=1e-10)
    assert res["p_value"] == pytest.approx(ref["p"], rel=1e-6)
    assert res["df"] == ref["df"]
    assert res["mean_difference"] == pytest.approx(ref["mean_difference"], rel=1e-10)
    assert res["lmer_t"] == pytest.approx(ref["lmer_t"], rel=1e-5)


def test_paired_design_not_claimed_for_other_models():
    data = _data("sleepstudy", ["Subject"])
    fit = lmmcore.lmer("Reaction ~ Days + (1 | Subject)", data)
    assert teaching.paired_comparison(fit, data) is None


def test_caterpillar_intervals_use_lme4_conditional_sds():
    ref = _ref("lme4/sleepstudy_slope.json")["ranef"]["Subject"]
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", _data("sleepstudy", ["Subject"]))
    table = teaching.caterpillar(fit, "Subject")
    z = stats.norm.ppf(0.975)
    days = table[table["term"] == "Days"].set_index("level")
    for level, values, sds in zip(ref["levels"], ref["values"], ref["cond_sd"]):
        assert days.loc[level, "estimate"] == pytest.approx(values[1], rel=1e-3, abs=1e-3)
        assert days.loc[level, "upper"] - days.loc[level, "lower"] == pytest.approx(2 * z * sds[1], rel=1e-3)
    assert list(days["estimate"]) == sorted(days["estimate"])
    with pytest.raises(lmmcore.LmmError):
        teaching.caterpillar(fit, "nope")


def test_qq_points_follow_r_ppoints_and_qqline():
    r = np.array([3.0, -1.0, 0.5, 2.0, -2.5])
    qq = teaching.qq_points(r)
    # R: qqnorm(r)$x for n = 5 uses ppoints(5) = (1:5 - 3/8) / (5 + 1 - 3/4)
    np.testing.assert_allclose(qq["theoretical"], stats.norm.ppf((np.arange(1, 6) - 0.375) / 5.25))
    np.testing.assert_allclose(qq["sample"], np.sort(r))
    a, b = qq["line"]
    # qqline passes through the quartile points (R's quantile type 7)
    q1, q3 = np.quantile(r, [0.25, 0.75])
    assert a + b * stats.norm.ppf(0.25) == pytest.approx(q1)
    assert a + b * stats.norm.ppf(0.75) == pytest.approx(q3)
    big = teaching.qq_points(np.arange(20.0))
    np.testing.assert_allclose(big["theoretical"], stats.norm.ppf((np.arange(1, 21) - 0.5) / 20))


def test_reproduce_code_is_quoted_r_and_python():
    r_code, py_code = teaching.reproduce_code(
        "value ~ condition + (1 | participant)", "df_original.csv", reml=False,
        categorical=["participant", "condition"], reference_levels={"condition": "2"})
    assert "library(lme4)" in r_code
    assert 'data <- read.csv("df_original.csv")' in r_code
    assert 'data[["condition"]] <- relevel(factor(data[["condition"]]), ref = "2")' in r_code
    assert "fit <- lmer(value ~ condition + (1 | participant), data = data, REML = FALSE)" in r_code
    assert 'reference_levels={"condition": "2"}' in py_code and "reml=False" in py_code
    compile(py_code, "<reproduce>", "exec")  # valid Python (compiled, never run)
    # a hostile file name stays a string literal
    _, py2 = teaching.reproduce_code("y ~ x", 'a"); import os; ("b.csv', reml=True, kind="lm")
    compile(py2, "<reproduce>", "exec")
    assert "lmmcore.lm(" in py2 and "\\\"" in py2


def test_reproduce_code_python_refits_the_same_model(tmp_path):
    csv = ROOT / "data" / "sleepstudy.csv"
    _, py_code = teaching.reproduce_code("Reaction ~ Days + (1 | Subject)", str(csv), reml=True,
                                         categorical=["Subject"])
    ref = _ref("lme4/sleepstudy_intercept.json")
    # Check the call's arguments rather than executing generated code.
    assert f'"{csv}"' in py_code and 'categorical=["Subject"]' in py_code
    with open(csv, "rb") as f:
        data = lmmcore.load_table(f.read(), str(csv))
    fit = lmmcore.lmer("Reaction ~ Days + (1 | Subject)", data, reml=True, categorical=["Subject"])
    assert fit.loglik == pytest.approx(ref["loglik"], rel=1e-6)


def test_wide_to_long_keeps_participants_and_condition_order():
    wide = pd.DataFrame({"id": ["b", "a"], "pre": [1.0, 2.0], "post": [3.0, np.nan], "age": [20, 30]})
    long = teaching.wide_to_long(wide, "id", ["pre", "post"], "time", "score")
    assert list(long.columns) == ["id", "time", "score"]
    assert list(long["id"]) == ["b", "b", "a", "a"]
    assert list(long["time"]) == ["pre", "post", "pre", "post"]
    assert long["score"].isna().sum() == 1
    for bad in [dict(id_column="nope", measure_columns=["pre", "post"]),
                dict(id_column="id", measure_columns=["pre"]),
                dict(id_column="id", measure_columns=["pre", "post"], condition_name="id"),
                dict(id_column="id", measure_columns=["id", "pre"])]:
        with pytest.raises(lmmcore.LmmError):
            teaching.wide_to_long(wide, **bad)
    with pytest.raises(lmmcore.LmmError, match="repeated"):
        teaching.wide_to_long(pd.concat([wide, wide]), "id", ["pre", "post"])


def test_column_types_overview_and_levels():
    df = pd.DataFrame({"Subject": [308, 309, 10, None], "x": [1.5, 2.0, None, None], "g": ["b", "a", "b", "a"]})
    types = teaching.column_types(df, categorical=["Subject"], overrides={"x": "categorical"})
    assert types == {"Subject": "categorical", "x": "categorical", "g": "categorical"}
    assert teaching.column_types(df) == {"Subject": "numeric", "x": "numeric", "g": "categorical"}
    assert teaching.level_order(df["Subject"]) == ["10", "308", "309"]  # numbers sort as numbers
    assert teaching.level_order(["b", "B", "a"]) == ["a", "b", "B"]  # R in en_US.UTF-8 (ICU)
    over = teaching.column_overview(df, teaching.column_types(df)).set_index("column")
    assert over.loc["x", "missing"] == 2 and over.loc["Subject", "missing"] == 1
    typed = teaching.apply_types(df, {"Subject": "categorical", "x": "numeric", "g": "categorical"})
    assert list(typed["Subject"]) == ["308", "309", "10", None]
    with pytest.raises(lmmcore.LmmError, match="not a number"):
        teaching.apply_types(df, {"g": "numeric"})


def test_few_observations_marks_the_incomplete_subjects():
    est = lmmcore.pooling_estimates(_data("sleepstudy_fake", ["Subject"]), "Reaction", "Days", "Subject")
    few = teaching.few_observations(est.n)
    assert set(few[few].index.astype(str)) == {"373", "374"}


@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (Days || Subject)",
    "Reaction ~ Days + (1 | Subject)", "y ~ x + (0 + x | g)", "strength ~ 1 + (1 | batch/cask)",
    "diameter ~ 1 + (1 | plate) + (1 | sample)", "weight ~ Time * Diet + (Time | Chick)"])
def test_builder_fields_write_the_formula_back(formula):
    """The model page fills its menus with decompose_formula (teaching.builder_choices,
    its duplicate, is gone): every catalogue-style formula goes round the builder."""
    assert compose_formula(**decompose_formula(formula)) == formula


def test_builder_fields_of_a_broken_formula_are_none():
    assert decompose_formula("y ~ (x | ") is None
    assert not hasattr(teaching, "builder_choices")


def test_random_sd_is_lme4s_std_dev():
    ref = _ref("lme4/sleepstudy_slope.json")
    fit = lmmcore.lmer(ref["formula"], _data("sleepstudy", ["Subject"]))
    sd = teaching.random_sd(fit, "Subject")
    assert list(sd.index) == ["(Intercept)", "Days"]
    expected = [r["sdcor"] for r in ref["varcorr"] if r["grp"] == "Subject" and not r["var2"]]
    np.testing.assert_allclose(sd.to_numpy(), expected, rtol=1e-4)
    with pytest.raises(lmmcore.LmmError, match="no random effects"):
        teaching.random_sd(fit, "Days")


def test_guess_roles_for_an_upload():
    df = pd.DataFrame({"participant": ["p1", "p1", "p2", "p2"], "day": [0, 1, 0, 1], "rt": [1.0, 2, 3, 5]})
    roles = teaching.guess_roles(df, teaching.column_types(df))
    assert roles == {"response": "rt", "predictor": "day", "group": "participant",
                     "formula": "rt ~ day + (1 | participant)"}


def test_what_to_do_fits_the_problem():
    sleep = _data("sleepstudy", ["Subject"])
    assert teaching.what_to_do(lmmcore.lmer("Reaction ~ Days + (Days | Subject)", sleep)) == []
    rank = lmmcore.lmer("Reaction ~ Days + I(Days*2) + (1 | Subject)", sleep)
    (advice,) = teaching.what_to_do(rank)
    assert "I(Days * 2)" in advice and "Remove it" in advice
    ref = _ref("lme4/dyestuff2_singular.json")
    singular = lmmcore.lmer(ref["formula"], _data("Dyestuff2", ["Batch"]))
    assert singular.is_singular == ref["singular"] is True
    (advice,) = teaching.what_to_do(singular)
    # random intercepts only: no random slope to drop; the fixed effects equal the lm's
    assert "slope" not in advice and "equal the lm's" in advice
    lm = lmmcore.lm("Yield ~ 1", _data("Dyestuff2", ["Batch"]))
    assert float(singular.fixef.iloc[0]) == pytest.approx(float(lm.fixef.iloc[0]), rel=1e-8)


def test_groups_to_highlight_are_the_small_and_the_most_shrunk():
    data = teaching.apply_types(pd.read_csv(ROOT / "data" / "sleepstudy_fake.csv"), {"Subject": "categorical"})
    est = lmmcore.pooling_estimates(data, "Reaction", "Days", "Subject", "intercept+slope")
    picked = teaching.groups_to_highlight(est, n_most=3)
    # 373 and 374 have one and two observations; three more are the largest moves
    assert {"373", "374"} <= set(picked)
    table = est.table
    no = table[table["method"] == "no"].set_index("group")
    part = table[table["method"] == "partial"].set_index("group")
    move = (((part["intercept"] - no["intercept"]) / no["intercept"].std()) ** 2
            + ((part["slope"] - no["slope"]) / no["slope"].std()) ** 2).dropna()
    assert set(picked) == {"373", "374"} | {str(g) for g in move.nlargest(3).index}
