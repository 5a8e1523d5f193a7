"""lm() against R 4.2.2's lm(): numbers (tests/fixtures/r/lm_*.json) and printed summary."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore import FormulaError, LmmError, lm

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "r"
CASES = {
    "sleepstudy": ("Reaction ~ Days", "sleepstudy", ["Subject"]),
    "chickweight": ("weight ~ Time * Diet", "ChickWeight", ["Chick", "Diet"]),
    "orthodont": ("distance ~ age + Sex", "Orthodont", ["Subject", "Sex"]),
    "df_original": ("value ~ condition", "df_original", ["participant", "condition"]),
}


def _fit(name):
    formula, dataset, factors = CASES[name]
    data = pd.read_csv(ROOT / "data" / f"{dataset}.csv")
    return lm(formula, data, categorical=factors, data_name=dataset)


@pytest.mark.parametrize("name", list(CASES))
def test_numbers_match_r(name):
    fit = _fit(name)
    ref = json.loads((FIX / f"lm_{name}.json").read_text())
    assert list(fit.fixef.index) == ref["coefficients"]
    for attr, key in (("fixef", "fixef"), ("se", "se"), ("tvalue", "tvalue"), ("pvalue", "pvalue")):
        got = getattr(fit, attr)
        want = pd.Series(ref[key])[got.index]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300, err_msg=attr)
    for attr, key in (("sigma", "sigma"), ("rsquared", "rsquared"), ("rsquared_adj", "rsquared_adj"),
                      ("fvalue", "fvalue"), ("f_pvalue", "f_pvalue"), ("loglik", "loglik"),
                      ("aic", "AIC"), ("bic", "BIC"), ("rss", "deviance_rss")):
        np.testing.assert_allclose(getattr(fit, attr), ref[key], rtol=1e-9, err_msg=attr)
    assert fit.df_resid == ref["df_resid"]
    assert fit.npar == ref["npar"]
    assert fit.nobs == ref["nobs"]
    assert fit.f_df == (ref["f_numdf"], ref["f_dendf"])
    np.testing.assert_allclose(fit.fitted.to_numpy()[:10], ref["fitted_head"], rtol=1e-9)
    np.testing.assert_allclose(np.quantile(fit.residuals, [0, .25, .5, .75, 1]),
                               ref["resid_quantiles"], rtol=1e-9)
    assert fit.deviance == pytest.approx(-2 * ref["loglik"], rel=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_summary_text_is_r_print(name):
    expected = (FIX / f"lm_{name}_summary.txt").read_text(encoding="utf-8")
    assert _fit(name).summary() == expected


def test_predict_and_pickle():
    fit = _fit("orthodont")
    new = pd.DataFrame({"age": [8.0, 14.0], "Sex": ["Female", "Male"]})
    b = fit.fixef
    np.testing.assert_allclose(fit.predict(new), [b["(Intercept)"] + 8 * b["age"],
                                                  b["(Intercept)"] + 14 * b["age"] + b["SexMale"]])
    again = pickle.loads(pickle.dumps(fit))
    np.testing.assert_allclose(again.predict(new), fit.predict(new))
    assert again.summary() == fit.summary()
    pd.testing.assert_series_equal(fit.predict(), fit.fitted)


def test_fit_is_read_only():
    """As MixedFit: no attribute can be set, and returned Series are copies."""
    fit = _fit("orthodont")
    with pytest.raises(AttributeError):
        fit.sigma = 1.0
    with pytest.raises(AttributeError):
        fit.fixef = None
    before = fit.fixef.copy()
    fixef, vcov, residuals = fit.fixef, fit.vcov, fit.residuals
    fixef.iloc[0] = vcov.iloc[0, 0] = residuals.iloc[0] = 1e9
    fit.messages.append("changed")
    pd.testing.assert_series_equal(fit.fixef, before)
    assert fit.vcov.iloc[0, 0] != 1e9 and fit.residuals.iloc[0] != 1e9
    assert "changed" not in fit.messages


def test_random_terms_point_to_lmer():
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    with pytest.raises(FormulaError, match="lmer"):
        lm("Reaction ~ Days + (Days | Subject)", data)


def test_missing_rows_and_aliased_column_reported():
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    data.loc[[0, 5], "Reaction"] = np.nan
    data["Days2"] = 2 * data["Days"]
    fit = lm("Reaction ~ Days + Days2", data, data_name="sleepstudy_na")
    ref = json.loads((FIX / "lm_sleepstudy_na_aliased.json").read_text())
    assert fit.nobs == ref["nobs"] == 178
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(fit.fixef, pd.Series(ref["fixef"])[fit.fixef.index], rtol=1e-9)
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-10)
    assert fit.npar == ref["npar"]
    # R shows the aliased Days2 as an NA row, the dropped rows, and (formatC's padding)
    # "F-statistic:  71.3 on"
    assert fit.summary() == (FIX / "lm_sleepstudy_na_aliased_summary.txt").read_text(encoding="utf-8")
    assert any("Days2" in m for m in fit.messages)


def test_bad_input_is_lmmerror():
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    with pytest.raises(LmmError):
        lm("Reaction ~ nosuchcolumn", data)
    with pytest.raises(LmmError):
        lm("Reaction ~ 0", data)


def test_lmer_t_equals_paired_t_test():
    """The lecture's point: with two conditions per participant, lmer's t is the paired t."""
    from scipy import stats

    from lmmcore import lmer

    ref = json.loads((FIX / "paired_t_df_original.json").read_text())
    data = pd.read_csv(ROOT / "data" / "df_original.csv")
    fit = lmer(ref["lmer_formula"], data, categorical=["participant", "condition"])
    wide = data.pivot(index="participant", columns="condition", values="value")
    t_scipy = stats.ttest_rel(wide[2], wide[1]).statistic
    assert t_scipy == pytest.approx(ref["t"], rel=1e-10)
    assert fit.tvalue["condition2"] == pytest.approx(ref["t"], rel=1e-5)
    assert fit.tvalue["condition2"] == pytest.approx(ref["lmer_t"], rel=1e-5)
    # lm ignores the pairing: a much smaller t
    assert lm("value ~ condition", data, categorical=["condition"]).tvalue["condition2"] < 1
