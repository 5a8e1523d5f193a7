"""lmmcore.fitview: the criterion's curve, parts and the optimiser's path, against lme4.

The curve is checked against lme4 1.1-31's devfun probes (tests/fixtures/lme4/*.json,
``devfun_probes``: lme4's ``devfun(theta)`` at the optimum and at scaled thetas) directly,
and against ``fit.deviance_function()`` at every point it draws.
"""

import math

import numpy as np
import pandas as pd
import pytest

from engine_designs import FIXTURE_NAMES, hand_design, load_fixture
from lmmcore import fitview as fv
from lmmcore.errors import LmmError
from lmmcore.mixed import fit_design, lmer

# lme4's devfun at fixed theta is exact arithmetic: the same tolerance as test_engine_fixtures.
PROBE_RTOL = 1e-8
#: Two factorizations of the same criterion (the blocked factor of solve() and the
#: representation the optimiser uses) agree to rounding, up to ~1e-12 relative on Pastes.
CROSS_REPRESENTATION = 1e-11
FIT_CACHE = {}


def _fit(name):
    if name not in FIT_CACHE:
        fx = load_fixture(name)
        FIT_CACHE[name] = fit_design(hand_design(name), reml=fx["REML"], data_name=fx["dataset"])
    return FIT_CACHE[name]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_curve_equals_lme4_devfun_probes(name):
    fx, fit = load_fixture(name), _fit(name)
    for probe in fx["devfun_probes"]:
        theta = np.atleast_1d(np.asarray(probe["theta"], float))
        for index in range(theta.size):
            curve = fv.criterion_curve(fit, index, values=[theta[index]], at=theta)
            assert curve["criterion"].iloc[0] == pytest.approx(probe["value"], rel=PROBE_RTOL)


def test_ml_curve_of_a_reml_fit_equals_lme4s_ml_devfun():
    # Dyestuff fitted with REML; its ML twin against lme4's ML devfun probes.
    fit, ml = _fit("dyestuff"), load_fixture("dyestuff_ml")
    thetas = [p["theta"][0] if isinstance(p["theta"], list) else p["theta"] for p in ml["devfun_probes"]]
    curve = fv.criterion_curve(fit, 0, values=thetas, reml=False)
    np.testing.assert_allclose(curve["criterion"], [p["value"] for p in ml["devfun_probes"]],
                               rtol=PROBE_RTOL)


@pytest.mark.parametrize("name", ["sleepstudy_intercept", "sleepstudy_slope", "penicillin_crossed"])
def test_curve_and_surface_equal_the_deviance_function(name):
    fit = _fit(name)
    dev = fit.deviance_function()
    curve = fv.criterion_curve(fit, 0, n_points=15)
    for t, v in zip(curve["theta"], curve["criterion"]):
        th = fit.theta.copy()
        th[0] = t
        assert v == dev(th)
    # lme4's optimum sits at the curve's minimum (a grid point is never lower)
    assert curve["criterion"].min() >= fit.objective - 1e-9 * fit.objective
    if len(fit.theta) >= 2:
        s = fv.criterion_surface(fit, 0, len(fit.theta) - 1, n_points=7)
        assert s["z"].shape == (7, 7)
        th = fit.theta.copy()
        th[0], th[-1] = s["x"][3], s["y"][5]
        assert s["z"][5, 3] == dev(th)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_parts_add_up_to_the_profiled_criterion(name):
    fx, fit = load_fixture(name), _fit(name)
    n, p = fit.nobs, len(fit.fixed_names)
    for reml in (True, False):
        for scale in (0.5, 1.0, 1.7):
            theta = np.abs(fit.theta) * scale + (0.1 if scale != 1.0 else 0.0) * (fit.theta == 0)
            st = fv.state_at(fit, theta, reml=reml)
            parts = st.parts
            assert parts.sum() == pytest.approx(st.criterion, rel=1e-12)
            # state_at solves with the blocked factor, the deviance function with the
            # representation chosen for speed (Dense on Pastes): equal up to rounding,
            # which reaches 1e-12 relative on Pastes' two nested terms
            assert st.criterion == pytest.approx(fit.deviance_function()(theta) if reml == fit.reml
                                                 else fv.criterion_curve(fit, 0, [theta[0]], reml=reml,
                                                                         at=theta)["criterion"][0], rel=CROSS_REPRESENTATION)
            # the profiled formula (JSS eq. 34 / 41), written out here on its own
            if reml:
                expect = (st.logdet_L + st.logdet_RX
                          + (n - p) * (1 + math.log(2 * math.pi * st.pwrss / (n - p))))
                assert set(parts.index) == {"logdet_L", "logdet_RX", "pwrss"}
            else:
                expect = st.logdet_L + n * (1 + math.log(2 * math.pi * st.pwrss / n))
                assert set(parts.index) == {"logdet_L", "pwrss"}
            assert st.criterion == pytest.approx(expect, rel=1e-12)
            assert st.sigma == pytest.approx(math.sqrt(st.pwrss / ((n - p) if reml else n)), rel=1e-12)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_state_at_the_optimum_is_the_fit(name):
    fit = _fit(name)
    st = fv.state_at(fit, fit.theta)
    assert st.criterion == pytest.approx(fit.objective, rel=1e-12)
    np.testing.assert_allclose(st.fixef.to_numpy(), fit.fixef.to_numpy(), rtol=1e-10)
    assert list(st.fixef.index) == fit.fixed_names
    assert st.sigma == pytest.approx(fit.sigma, rel=1e-12)
    for g, re in fit.ranef.items():
        pd.testing.assert_frame_equal(st.ranef[g].reset_index(drop=True), re.reset_index(drop=True),
                                      check_exact=False, atol=1e-9 * max(1.0, float(np.abs(re.values).max())))
        pd.testing.assert_frame_equal(st.coef[g].reset_index(drop=True), fit.coef[g].reset_index(drop=True),
                                      check_exact=False, rtol=1e-9, atol=1e-9)
        pd.testing.assert_frame_equal(st.re_cov(g), fit.re_cov(g), check_exact=False, rtol=1e-9, atol=1e-12)


def test_theta_moves_every_group_between_complete_and_no_pooling():
    # One knob: theta = 0 gives lm's estimates (every group at the average); a huge theta
    # gives each group its own intercept (lm with group intercepts and a common slope).
    from lmmcore.linear import lm
    data = pd.read_csv(hand_design.__globals__["DATA"] / "sleepstudy.csv")
    fit = lmer("Reaction ~ Days + (1 | Subject)", data, categorical=["Subject"])
    zero = fv.state_at(fit, [0.0])
    np.testing.assert_allclose(zero.fixef.to_numpy(), lm("Reaction ~ Days", data).fixef.to_numpy(), rtol=1e-10)
    assert np.abs(zero.ranef["Subject"].to_numpy()).max() == 0.0
    huge = fv.state_at(fit, [1e4])
    own = lm("Reaction ~ 0 + Subject + Days", data, categorical=["Subject"]).fixef
    got = huge.coef["Subject"]["(Intercept)"]
    want = own[[f"Subject{g}" for g in got.index]].to_numpy()
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-6)
    # and in between, every group's deviation shrinks by the same rule as theta falls
    spread = [fv.state_at(fit, [t]).ranef["Subject"].std().iloc[0] for t in (0.25, 0.5, 1.0, 2.0)]
    assert spread == sorted(spread)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_path_starts_at_lme4s_start_and_ends_at_the_optimum(name):
    fit = _fit(name)
    path = fv.optimizer_path(fit)
    names = fv.theta_names(fit)
    start = path.loc[0, names].to_numpy(float)
    expected_start = np.asarray(fit.optimizer.theta_start, float)
    assert set(np.unique(expected_start)) <= {0.0, 1.0}
    np.testing.assert_array_equal(start, expected_start)
    assert path.loc[0, "descent"]
    descent = path[path["descent"]]
    np.testing.assert_array_equal(descent[names].to_numpy(float)[-1], fit.theta)
    # the path's values come from the optimiser's representation, fit.objective from the
    # blocked factor (see CROSS_REPRESENTATION)
    assert descent["criterion"].iloc[-1] == pytest.approx(fit.objective, rel=CROSS_REPRESENTATION)
    # the way down never goes up (beyond the boundary check's rounding tolerance)
    assert np.all(np.diff(descent["criterion"].to_numpy()) <= 1e-10 * abs(fit.objective))
    dev = fit.deviance_function()
    for _, row in path.iloc[: min(len(path), 6)].iterrows():
        assert row["criterion"] == dev(row[names].to_numpy(float))


def test_start_is_one_on_diagonals_and_zero_off_them():
    fit = _fit("sleepstudy_slope")
    assert fv.theta_names(fit) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    assert fv.optimizer_path(fit).loc[0, fv.theta_names(fit)].tolist() == [1.0, 0.0, 1.0]


def test_singular_fit_optimum_on_the_boundary():
    fit = _fit("dyestuff2_singular")
    assert fit.theta[0] == 0.0
    curve = fv.criterion_curve(fit, 0)
    assert curve["theta"].iloc[0] == 0.0
    assert curve["criterion"].idxmin() == 0          # lowest at theta = 0: the bound
    st = fv.state_at(fit, [0.0])
    assert np.all(st.ranef["Batch"].to_numpy() == 0.0)   # every batch at the average


def test_bad_theta_is_refused_with_a_message():
    fit = _fit("sleepstudy_slope")
    with pytest.raises(LmmError, match="3 finite numbers"):
        fv.state_at(fit, [1.0])
    with pytest.raises(LmmError, match="cannot be negative"):
        fv.state_at(fit, [-1.0, 0.0, 1.0])
    with pytest.raises(LmmError, match="two different"):
        fv.criterion_surface(fit, 1, 1)
