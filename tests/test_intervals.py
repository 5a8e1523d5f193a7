"""confint (Wald, profile, bootstrap), predict with intervals and influence vs frozen lme4.

References: ``tests/fixtures/intervals/*.json`` made by ``tests/fixtures/inference/gen_inference.R`` (lme4 1.1-31:
``confint(..., oldNames = FALSE)``, ``influence(fit, groups = g)``, ``cooks.distance``,
``predict(re.form = NA)`` and ``sqrt(diag(X V X'))``) and ``gen_boot.R`` (``bootMer`` with
seed 101, 1000 samples, percentile limits) beside them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmcore
from lmmcore import intervals as iv
from lmmcore.errors import BootstrapCancelled, DataError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "intervals"
DATA = ROOT / "data"

CASES = sorted(p.stem for p in FIX.glob("*.json") if not p.stem.startswith("boot_"))


def _load(name):
    return json.loads((FIX / f"{name}.json").read_text())


_FITS = {}


def _fit(ref):
    key = (ref["dataset"], ref["formula"])
    if key not in _FITS:
        data = pd.read_csv(DATA / f"{ref['dataset']}.csv")
        factors = [f for f in ref.get("factors", "").split(",") if f]
        _FITS[key] = lmmcore.lmer(ref["formula"], data, categorical=factors)
    return _FITS[key]


def _table(t):
    return pd.DataFrame(np.array(t["values"], float).reshape(len(t["rows"]), len(t["cols"])),
                        index=t["rows"], columns=t["cols"])


@pytest.mark.parametrize("name", CASES)
def test_wald_matches_lme4(name):
    ref = _load(name)
    fit = _fit(ref)
    want = _table(ref["confint_wald"])
    got = fit.confint(method="wald")
    assert list(got.index) == list(want.index)
    assert list(got.columns) == ["2.5 %", "97.5 %"]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_profile_matches_lme4(name):
    """Profile limits within 1e-3 relative (lme4's spline error is larger than that only
    where noted); a limit lme4 leaves at a bound (NA -> 0 for an sd) is the same bound."""
    ref = _load(name)
    if ref.get("confint_profile") is None:
        pytest.skip("lme4 gave no profile for this case")
    fit = _fit(ref)
    want = _table(ref["confint_profile"])
    got = fit.confint()
    assert list(got.index) == list(want.index)
    w, g = want.to_numpy(), got.to_numpy()
    both_nan = np.isnan(w) & np.isnan(g)
    scale = np.maximum(np.abs(w), 1e-2 * np.nanmax(np.abs(w), axis=1, keepdims=True))
    err = np.where(both_nan, 0.0, np.abs(g - w) / scale)
    assert np.nanmax(err) < 1e-3, pd.DataFrame(err, index=want.index)


@pytest.mark.parametrize("name", CASES)
def test_influence_matches_lme4(name):
    ref = _load(name)
    inf = ref.get("influence")
    if not inf:
        pytest.skip("no influence reference")
    fit = _fit(ref)
    got = fit.influence(inf["group"])
    assert [str(x) for x in got.index] == list(inf["levels"])
    want = _table(inf["fixef_without"])
    np.testing.assert_allclose(got[list(want.columns)].to_numpy(), want.to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(got["cooks_distance"].to_numpy(), inf["cooks"], rtol=2e-3,
                               atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_predict_matches_lme4(name):
    ref = _load(name)
    fit = _fit(ref)
    data = pd.read_csv(DATA / f"{ref['dataset']}.csv")
    nd = data.iloc[:3]
    pr = ref["predict"]
    ci = fit.predict(nd, re_form="none", interval="confidence")
    np.testing.assert_allclose(ci["fit"].to_numpy(), pr["fit"], rtol=1e-6)
    np.testing.assert_allclose(ci["se_fit"].to_numpy(), pr["se_fit"], rtol=1e-4)
    z = 1.959963984540054
    np.testing.assert_allclose(ci["upr"] - ci["fit"], z * ci["se_fit"], rtol=1e-12)
    np.testing.assert_allclose(fit.predict(nd).to_numpy(), pr["conditional"], rtol=1e-5)


SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_fit():
    data = pd.read_csv(DATA / "sleepstudy.csv")
    return lmmcore.lmer(SLEEP, data, categorical=["Subject"])


def test_prediction_interval_adds_group_and_residual_variance(sleep_fit):
    fit = sleep_fit
    nd = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["new", "308"]})
    pi = fit.predict(nd, re_form="none", interval="prediction", level=0.9)
    cov = fit.re_cov("Subject").to_numpy()
    zr = np.array([[1.0, 0.0], [1.0, 5.0]])
    var = pi["se_fit"] ** 2 + np.einsum("ij,jk,ik->i", zr, cov, zr) + fit.sigma ** 2
    z = 1.6448536269514722
    np.testing.assert_allclose(pi["upr"], pi["fit"] + z * np.sqrt(var), rtol=1e-12)
    # an unseen level gets the population value (allow.new.levels = TRUE)
    full = fit.predict(nd)
    assert full.iloc[0] == pytest.approx(fit.fixef["(Intercept)"])
    assert full.iloc[1] == pytest.approx(fit.coef["Subject"].loc["308"] @ [1.0, 5.0])


def test_predict_missing_column_and_bad_arguments(sleep_fit):
    with pytest.raises(DataError, match="Days"):
        sleep_fit.predict(pd.DataFrame({"Subject": ["308"]}))
    with pytest.raises(DataError, match="Subject"):
        sleep_fit.predict(pd.DataFrame({"Days": [1.0]}), re_form="full")
    # population level does not need the grouping column
    assert len(sleep_fit.predict(pd.DataFrame({"Days": [1.0]}), re_form="none")) == 1
    with pytest.raises(DataError, match="re_form"):
        sleep_fit.predict(pd.DataFrame({"Days": [1.0]}), re_form="NA")
    with pytest.raises(DataError, match="interval"):
        sleep_fit.predict(pd.DataFrame({"Days": [1.0]}), re_form="none", interval="tolerance")


def test_include_random_still_works_but_is_deprecated(sleep_fit):
    nd = pd.DataFrame({"Days": [2.0], "Subject": ["308"]})
    with pytest.warns(DeprecationWarning):
        old = sleep_fit.predict(nd, include_random=False)
    assert old.iloc[0] == pytest.approx(sleep_fit.predict(nd, re_form="none").iloc[0])


def test_level_column_names_as_r():
    assert iv.level_columns(0.95) == ["2.5 %", "97.5 %"]
    assert iv.level_columns(0.9) == ["5 %", "95 %"]
    assert iv.level_columns(0.99) == ["0.5 %", "99.5 %"]
    assert iv.level_columns(0.999) == ["0.05 %", "99.95 %"]
    with pytest.raises(DataError, match="level"):
        iv.level_columns(95)


def test_unknown_method(sleep_fit):
    with pytest.raises(DataError, match="method"):
        sleep_fit.confint(method="bayes")


def test_percentile_interval_is_boot_norm_inter():
    # boot:::norm.inter(1:999, c(.025, .975)) gives the 25th and 975th order statistics
    t = np.arange(1.0, 1000.0)
    np.testing.assert_allclose(iv.percentile_interval(t, 0.95), [25.0, 975.0])
    # R = 1000: (R + 1) * 0.025 = 25.025, interpolated on the normal scale
    t = np.arange(1.0, 1001.0)
    lo = iv.percentile_interval(t, 0.95)[0]
    assert 25.0 < lo < 26.0


@pytest.mark.parametrize("name", ["sleepstudy_slope", "dyestuff"])
def test_bootstrap_within_monte_carlo_error_of_bootmer(name):
    """Percentile limits of 1000 parametric bootstrap samples vs bootMer's (seed 101).

    Two independent runs differ in a 2.5 % quantile by about
    sqrt(2 * a (1 - a) / R) / dnorm(qnorm(a)) * sd (the quantile's standard error, both
    runs random): 0.0087 sd for R = 1000.  Allow 4 of those.
    """
    ref = json.loads((FIX / f"boot_{name}.json").read_text())
    data = pd.read_csv(DATA / f"{ref['dataset']}.csv")
    fit = lmmcore.lmer(ref["formula"], data)
    got = fit.confint(method="boot", nsim=ref["nsim"], seed=1)
    want = _table(ref)
    assert list(got.index) == list(want.index)
    a = 0.025
    from scipy.stats import norm
    se_q = math.sqrt(2 * a * (1 - a) / ref["nsim"]) / norm.pdf(norm.ppf(a))
    tol = 4 * se_q * np.asarray(ref["replicate_sd"])[:, None]
    assert np.all(np.abs(got.to_numpy() - want.to_numpy()) <= tol), (got, want)


def test_bootstrap_seeded_progress_and_cancel(sleep_fit):
    calls = []
    a = sleep_fit.bootstrap(nsim=5, seed=3, progress=lambda d, t: calls.append((d, t)))
    b = sleep_fit.bootstrap(nsim=5, seed=3)
    pd.testing.assert_frame_equal(a.replicates, b.replicates)
    assert calls == [(i, 5) for i in range(1, 6)]
    with pytest.raises(BootstrapCancelled) as info:
        sleep_fit.bootstrap(nsim=50, seed=3, progress=lambda d, t: d < 3)
    assert len(info.value.partial.replicates) == 3
    pd.testing.assert_frame_equal(info.value.partial.replicates, a.replicates.iloc[:3])


def test_influence_unknown_group(sleep_fit):
    with pytest.raises(DataError, match="Subject"):
        sleep_fit.influence("Days")
