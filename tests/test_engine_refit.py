"""MixedFit.refit(y) (a new response on the same design) and refit_subset(rows) (CV).

refit(y) must give what a fresh lmer on data with that response gives, to the
optimiser's tolerance; refit_subset(rows) what a fresh lmer on those rows gives.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine_designs import hand_design, load_fixture
from lmmcore.errors import DataError, FitError
from lmmcore.mixed import fit_design, lmer

DATA = Path(__file__).resolve().parent.parent / "data"
CASES = ["sleepstudy_slope", "sleepstudy_intercept", "penicillin_crossed", "chickweight",
         "dyestuff2_singular", "pastes_nested"]


def _fit(name):
    return fit_design(hand_design(name), reml=load_fixture(name)["REML"])


def _same_optimum(a, b, rtol=1e-6):
    """Equal to the optimiser's tolerance: objective to 1e-9, estimates to rtol."""
    assert a.objective == pytest.approx(b.objective, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-4 * max(1, np.abs(b.theta).max()))
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=rtol, atol=1e-8)
    assert a.sigma == pytest.approx(b.sigma, rel=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_refit_on_the_original_response_reproduces_the_fit(name):
    fit = _fit(name)
    again = fit.refit(fit.design.y)
    _same_optimum(again, fit, rtol=1e-8)
    assert again.lme4_messages == fit.lme4_messages
    assert again.optimizer.evaluations <= 5          # starts at the optimum
    assert again.summary() == fit.summary()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("seed", [1, 2])
def test_refit_on_a_simulated_response_equals_a_fresh_fit(name, seed):
    fit = _fit(name)
    rng = np.random.default_rng(seed)
    y = fit.fitted.to_numpy() + rng.normal(0, fit.sigma, fit.nobs)
    fresh = fit_design(replace(fit.design, y=y), reml=fit.reml)
    new = fit.refit(y)
    assert new.objective <= fresh.objective + 1e-9 * abs(fresh.objective)
    _same_optimum(new, fresh)
    assert new.is_singular == fresh.is_singular and new.converged == fresh.converged
    np.testing.assert_array_equal(new.design.y, y)
    np.testing.assert_allclose(new.residuals + new.fitted, y)
    # the random effects, computed when first read from the refit's solution
    for g, re in fresh.ranef.items():
        np.testing.assert_allclose(new.ranef[g].to_numpy(), re.to_numpy(), rtol=1e-4,
                                   atol=1e-4 * max(1.0, float(np.abs(re.to_numpy()).max())))


def test_refit_with_a_series_and_ml():
    fit = _fit("sleepstudy_slope")
    y = pd.Series(fit.design.y[::-1].copy(), index=np.arange(fit.nobs)[::-1])
    ml = fit.refit(y, reml=False)
    assert not ml.reml
    fresh = fit_design(replace(fit.design, y=y.to_numpy()), reml=False)
    _same_optimum(ml, fresh)
    assert fit.refit(reml=True) is fit
    assert fit.refit(reml=False).deviance == pytest.approx(
        load_fixture("sleepstudy_slope_ml")["objective"], rel=1e-7)


def test_refit_rejects_a_bad_response():
    fit = _fit("dyestuff")
    with pytest.raises(DataError, match="one value per observation"):
        fit.refit(np.ones(fit.nobs - 1))
    y = np.ones(fit.nobs)
    y[3] = np.nan
    with pytest.raises(DataError, match="missing or infinite"):
        fit.refit(y)


def _sleepstudy():
    d = pd.read_csv(DATA / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    return d


def test_refit_subset_equals_lmer_on_the_rows():
    d = _sleepstudy()
    fit = lmer("Reaction ~ Days + (Days | Subject)", d)
    keep = (d["Subject"] != "308").to_numpy()
    fresh = lmer("Reaction ~ Days + (Days | Subject)", d[keep])
    for sub in (fit.refit_subset(keep), fit.refit_subset(np.flatnonzero(keep)),
                fit.refit_subset(keep, warm_start=False)):
        _same_optimum(sub, fresh)
        assert sub.ngroups == fresh.ngroups == {"Subject": 17}
        assert list(sub.ranef["Subject"].index) == list(fresh.ranef["Subject"].index)
        assert list(sub.fitted.index) == list(fresh.fitted.index)
        # the left-out subject is a new level: the population prediction
        np.testing.assert_allclose(sub.predict(d[~keep]).to_numpy(),
                                   fresh.predict(d[~keep]).to_numpy(), rtol=1e-7)
        np.testing.assert_allclose(sub.predict(d[keep]).to_numpy(),
                                   fresh.predict(d[keep]).to_numpy(), rtol=1e-7)
    assert fit.refit_subset(keep).optimizer.evaluations < fresh.optimizer.evaluations


def test_refit_subset_leave_one_out_and_new_response():
    d = _sleepstudy()
    fit = lmer("Reaction ~ Days + (Days | Subject)", d)
    for i in (0, 97):
        keep = np.arange(fit.nobs) != i
        _same_optimum(fit.refit_subset(keep), lmer("Reaction ~ Days + (Days | Subject)", d[keep]))
    y = np.random.default_rng(4).normal(300, 40, 170)
    sub = fit.refit_subset(np.arange(170), y=y)
    fresh = lmer("Reaction ~ Days + (Days | Subject)", d.iloc[:170].assign(Reaction=y))
    _same_optimum(sub, fresh)


def test_refit_subset_errors():
    d = _sleepstudy()
    fit = lmer("Reaction ~ Days + (Days | Subject)", d)
    with pytest.raises(DataError, match="between 0 and 179"):
        fit.refit_subset([0, 180])
    with pytest.raises(DataError, match="one value per observation"):
        fit.refit_subset(np.ones(10, bool))
    with pytest.raises(DataError, match="linearly dependent"):
        fit.refit_subset(np.flatnonzero(d["Days"].to_numpy() == 3))
    with pytest.raises(FitError):
        fit.refit_subset(np.flatnonzero((d["Subject"] == "308").to_numpy()))
