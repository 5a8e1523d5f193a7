"""lmerTest's t-tests and type III anova (Satterthwaite, Kenward-Roger) and Nakagawa's R²,
against frozen R references (tests/fixtures/inference: gen_inference.R, gen_optimum.R).

Two comparisons per case: at R's own optimum (theta, sigma from gen_optimum.R), which tests the
formulas -- df, p and F within 1e-5 relative (the brief asks 1e-4) -- and at lmmcore's optimum,
where the estimates themselves differ from lme4's by the optimisers' tolerance (up to ~3e-4
relative in a standard error on Orthodont), so there the check is on the df and F to 1e-3 and p to
a tolerance scaled by how fast p moves with t.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore import deviance as _dev
from lmmcore import lmer
from lmmcore.errors import FitError
from lmmcore.inference import r2
from lmmcore.mixed import MixedFit

FIX = Path(__file__).parent / "fixtures" / "inference"
DATA = Path(__file__).parent.parent / "data"
OPTIMUM = json.loads((FIX / "optimum.json").read_text())
CASES = list(OPTIMUM)


def _table(ref):
    vals = np.array(ref["values"], float).reshape(len(ref["rows"]), len(ref["cols"]))
    return pd.DataFrame(vals, index=ref["rows"], columns=ref["cols"])


def _data(name):
    for folder in (DATA, Path("/nonexistent")):
        f = folder / f"{name}.csv"
        if f.exists():
            return pd.read_csv(f)
    pytest.skip(f"dataset {name} not in data/")


_FITS = {}


def _fits(name):
    if name not in _FITS:
        fx = json.loads((FIX / f"{name}.json").read_text())
        cats = [c for c in fx["factors"].split(",") if c]
        fit = lmer(fx["formula"], _data(fx["dataset"]), categorical=cats,
                   data_name=fx["dataset"])
        opt = OPTIMUM[name]
        sol = _dev.solve(fit._cp, np.array(opt["theta"], float), True)
        at_r = MixedFit(fit.design, True, fit._cp, sol, fit.optimizer, fit._check, fit.data_name)
        assert sol.sigma == pytest.approx(opt["sigma"][0], rel=1e-9)
        _FITS[name] = (fx, fit, at_r)
    return _FITS[name]


TABLES = [("coef_table", "satterthwaite", "satterthwaite"),
          ("coef_table", "kenward-roger", "kenward_roger"),
          ("anova_fixed", "satterthwaite", "anova_satterthwaite"),
          ("anova_fixed", "kenward-roger", "anova_kenward_roger")]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("method,ddf,key", TABLES)
def test_tables_at_r_optimum(name, method, ddf, key):
    fx, _, at_r = _fits(name)
    ref = _table(fx[key])
    got = getattr(at_r, method)(ddf)
    assert list(got.columns) == list(ref.columns)
    assert list(got.index) == list(ref.index)
    if len(ref):
        np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_tables_at_own_optimum(name):
    fx, fit, _ = _fits(name)
    for ddf, key in [("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward_roger")]:
        ref = _table(fx[key])
        got = fit.coef_table(ddf).loc[ref.index]
        np.testing.assert_allclose(got["df"], ref["df"], rtol=1e-3)
        np.testing.assert_allclose(got["t value"], ref["t value"], rtol=1e-3)
        # p moves with t by d log p / d log t ~ t^2: compare log p
        np.testing.assert_allclose(np.log(got["Pr(>|t|)"]), np.log(ref["Pr(>|t|)"]),
                                   rtol=2e-3, atol=2e-2)
    for ddf, key in [("satterthwaite", "anova_satterthwaite"),
                     ("kenward-roger", "anova_kenward_roger")]:
        ref = _table(fx[key])
        if len(ref):
            got = fit.anova_fixed(ddf).loc[ref.index]
            np.testing.assert_allclose(got[["NumDF", "DenDF", "F value"]],
                                       ref[["NumDF", "DenDF", "F value"]], rtol=1e-3)


@pytest.mark.parametrize("name", CASES)
def test_r2_nakagawa(name):
    fx, fit, at_r = _fits(name)
    ref = fx["r2"]
    got = r2(at_r)
    assert got["marginal"] == pytest.approx(ref["marginal"], rel=1e-6, abs=1e-12)
    if ref["conditional"] is None:           # singular fit: performance returns NA
        assert np.isnan(got["conditional"])
    else:
        assert got["conditional"] == pytest.approx(ref["conditional"], rel=1e-6)
    own = r2(fit)
    assert own["marginal"] == pytest.approx(ref["marginal"], rel=1e-3, abs=1e-12)


def test_lme4_table_and_unknown_ddf():
    _, fit, _ = _fits("sleepstudy_slope")
    plain = fit.coef_table("lme4")
    assert list(plain.columns) == ["Estimate", "Std. Error", "t value"]
    np.testing.assert_allclose(plain["Std. Error"], fit.se)
    with pytest.raises(ValueError, match="unknown ddf 'welch'"):
        fit.coef_table("welch")
    with pytest.raises(ValueError, match="anova_fixed needs"):
        fit.anova_fixed("lme4")


def test_kenward_roger_needs_reml():
    _, fit, _ = _fits("sleepstudy_slope")
    ml = fit.refit(reml=False)
    with pytest.raises(FitError, match="only available for REML"):
        ml.coef_table("kenward-roger")
    # Satterthwaite works on ML fits (lmerTest uses the ML deviance then)
    assert np.all(ml.coef_table("satterthwaite")["df"] > 0)


def test_factor_terms_are_tested_jointly():
    fx, fit, _ = _fits("chickweight_factor")
    tab = fit.anova_fixed()
    assert list(tab.index) == ["Time", "Diet", "Time:Diet"]
    assert list(tab["NumDF"]) == [1, 3, 3]


def _printed(name):
    import re

    text = (FIX / f"printed_{name}.txt").read_text()
    return {k: v.rstrip("\n").split("\n")
            for k, v in re.findall(r"#### (\w+)\n(.*?)(?=\n#### |\Z)", text, re.S)}


@pytest.mark.parametrize("name", CASES)
def test_printed_summary_and_anova_equal_lmertest(name):
    from lmmcore.printing import format_anova_fixed, lmertest_summary

    _, _, at_r = _fits(name)
    ref = _printed(name)
    for ddf, key in [("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward_roger")]:
        ours = lmertest_summary(at_r, ddf).rstrip("\n").split("\n")
        want = ref[f"summary_{key}"]
        assert len(ours) == len(want)
        for a, b in zip(ours, want):
            if b.startswith("optimizer (nloptwrap)"):     # our optimiser is BFGS
                assert a.startswith("optimizer (BFGS)")
                continue
            assert a == b
        table = at_r.anova_fixed(ddf)
        assert format_anova_fixed(table, ddf).rstrip("\n").split("\n") == ref[f"anova_{key}"]


@pytest.mark.slow
def test_insteval_satterthwaite_at_r_optimum():
    """InstEval (73,421 rows, three crossed factors): lmerTest took 182 s for its Hessian and
    Jacobian on this machine (gen_insteval.R); lmmcore about 20 s."""
    from lmmcore.design import build_design
    from lmmcore.optimize import check_convergence

    ref = json.loads((FIX / "insteval.json").read_text())
    data = pd.read_csv(Path(__file__).parent.parent / "bench" / "data" / "InstEval.csv")
    design = build_design(ref["formula"], data, categorical=["s", "d", "dept", "service"])
    cp = _dev.cross_products(design)
    theta = np.array(ref["theta"])
    sol = _dev.solve(cp, theta, True)
    dev = _dev.ProfiledDeviance(cp, True)
    check = check_convergence(dev, theta, sol.objective, dev.lower(), np.zeros_like(theta))
    fit = MixedFit(design, True, cp, sol, None, check, "InstEval")
    # df within 1e-6; a p-value of 1e-38 moves 2e-5 relative with it (the brief: 1e-4)
    np.testing.assert_allclose(fit.coef_table().to_numpy(),
                               _table(ref["satterthwaite"]).to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(fit.anova_fixed().to_numpy(),
                               _table(ref["anova_satterthwaite"]).to_numpy(), rtol=1e-5)
