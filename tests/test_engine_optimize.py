"""The optimiser: the sign symmetry it relies on, its path, and lme4's checks."""

import numpy as np
import pytest

from engine_designs import FIXTURE_NAMES, hand_design, load_fixture
from lmmcore import deviance as dv
from lmmcore.mixed import fit_design
from lmmcore.optimize import gradient_hessian


@pytest.mark.parametrize("name", ["sleepstudy_slope", "orthodont", "penicillin_crossed",
                                  "pastes_nested", "chickweight"])
def test_objective_is_invariant_to_flipping_a_factor_column(name):
    """lme4's bounds only pick one of the sign-flipped factors: same objective, and the
    gradient maps with the signs (what the unbounded optimiser relies on)."""
    fx = load_fixture(name)
    cp = dv.cross_products(hand_design(name))
    rng = np.random.default_rng(7)
    theta = np.abs(np.asarray(fx["theta"], float)) + 0.1
    flipped = theta * np.where(rng.random(theta.size) < 0.5, -1.0, 1.0)
    flipped[dv.theta_lower(cp.layouts) == 0] *= -1.0          # every diagonal negative
    signs = dv.canonical_signs(cp.layouts, flipped)
    canon = signs * flipped
    assert np.all(canon >= dv.theta_lower(cp.layouts))
    v1, g1 = dv.objective_and_gradient(cp, flipped, fx["REML"])
    v2, g2 = dv.objective_and_gradient(cp, canon, fx["REML"])
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(signs * g1, g2, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_path_stays_inside_lme4_bounds_and_ends_at_the_optimum(name):
    fx = load_fixture(name)
    fit = fit_design(hand_design(name), reml=fx["REML"])
    rec = fit.optimizer
    lower = dv.theta_lower(fit._cp.layouts)
    assert np.all(rec.path_theta >= lower)
    assert rec.theta_start == tuple(dv.theta_start(fit._cp.layouts))
    assert rec.converged
    # the optimiser may evaluate small models on dense matrices: same value up to rounding
    assert fit.objective == pytest.approx(rec.path_objective.min(), rel=1e-11)
    # a handful of evaluations for these small models (lme4's BOBYQA takes 20-150)
    assert rec.evaluations <= 30


def test_analytic_gradient_at_a_zero_variance_of_a_crossed_model():
    """At a scalar term's 0 the gradient is 0 there (even objective) and the others match
    central differences: no finite-difference fallback on the boundary."""
    cp = dv.cross_products(hand_design("penicillin_crossed"))
    theta = np.array([1.5, 0.0])
    val, g = dv.objective_and_gradient(cp, theta, True)
    h = 1e-6
    fd = (dv.objective(cp, theta + [h, 0]) - dv.objective(cp, theta - [h, 0])) / (2 * h)
    assert g[1] == 0.0
    assert g[0] == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("name", ["penicillin_crossed", "pastes_nested", "sleepstudy_uncorrelated",
                                  "orthodont", "chickweight"])
@pytest.mark.parametrize("reml", [True, False])
def test_dense_small_model_path_equals_the_blocked_factor(name, reml):
    cp = dv.cross_products(hand_design(name))
    ds = dv.dense_system(cp)
    rng = np.random.default_rng(11)
    for _ in range(3):
        theta = dv.theta_start(cp.layouts) * rng.uniform(0.3, 1.5) + rng.normal(0, 0.2, cp.n_theta)
        v1, g1 = dv.objective_and_gradient(cp, theta, reml)
        v2, g2 = dv.dense_objective_and_gradient(ds, theta, cp.n, cp.p, reml)
        assert v2 == pytest.approx(v1, rel=1e-11)
        np.testing.assert_allclose(g2, g1, rtol=1e-6, atol=1e-6)
    theta[np.flatnonzero(dv.theta_lower(cp.layouts) == 0)[0]] = 0.0   # on the boundary
    h = 1e-6
    fd = [(dv.objective(cp, theta + h * e, reml) - dv.objective(cp, theta - h * e, reml)) / (2 * h)
          for e in np.eye(theta.size)]
    np.testing.assert_allclose(dv.dense_objective_and_gradient(ds, theta, cp.n, cp.p, reml)[1],
                               fd, rtol=1e-5, atol=1e-5)


def test_hessian_from_the_gradient_matches_lme4_deriv12():
    fx = load_fixture("sleepstudy_slope")
    fit = fit_design(hand_design("sleepstudy_slope"), reml=True)
    dev = fit.deviance_function()
    g, H = gradient_hessian(dev, fit.theta, fit.objective)
    from lmmcore.optimize import deriv12
    g12, H12 = deriv12(dev, fit.theta, fit.objective)
    np.testing.assert_allclose(H, H12, rtol=1e-3, atol=1e-2)
    assert np.max(np.abs(g)) < 1e-3
    assert fx["objective"] >= fit.objective - 1e-9


class _DoubleWell:
    """(t0^2 - 1)^2 + t1^2: lme4's start t0 = 0 is a saddle on the boundary."""

    has_gradient = True

    def __call__(self, t):
        return float((t[0] ** 2 - 1) ** 2 + t[1] ** 2)

    def value_and_gradient(self, t):
        return self(t), np.array([4 * t[0] * (t[0] ** 2 - 1), 2 * t[1]])

    def canonical_signs(self, t):
        return np.where(np.asarray(t) < 0, -1.0, 1.0)


def test_restart_edge_leaves_a_saddle_on_the_boundary():
    from lmmcore.optimize import minimize_theta
    theta, value, rec = minimize_theta(_DoubleWell(), np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    assert theta[0] == pytest.approx(1.0, abs=1e-6)
    assert value < 1e-10 and rec.converged


def test_singular_fit_reports_an_exact_zero():
    fx = load_fixture("dyestuff2_singular")
    fit = fit_design(hand_design("dyestuff2_singular"), reml=fx["REML"])
    assert fit.theta[0] == 0.0 and fit.is_singular
    assert fit.objective <= fx["objective"] + 1e-9


def _crossed_scalar_design(seed=5):
    """Three crossed scalar terms, large enough for the sparse Schur-pattern path."""
    import pandas as pd
    from lmmcore.design import build_design
    rng = np.random.default_rng(seed)
    n = 4000
    g1, g2, g3 = rng.integers(0, 700, n), rng.integers(0, 420, n), rng.integers(0, 12, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.7, 700)[g1] + rng.normal(0, 0.4, 420)[g2]
         + rng.normal(0, 0.3, 12)[g3] + rng.normal(size=n))
    data = pd.DataFrame({"y": y, "x": x, "g1": g1.astype(str), "g2": g2.astype(str),
                         "g3": g3.astype(str)})
    return build_design("y ~ x + (1 | g1) + (1 | g2) + (1 | g3)", data)


@pytest.mark.parametrize("reml", [True, False])
def test_schur_pattern_path_equals_scipy_products(reml):
    from dataclasses import replace
    cp = dv.cross_products(_crossed_scalar_design())
    assert cp.schur is not None                                   # the fast path is taken
    plain = replace(cp, schur=None)
    for theta in ([0.8, 0.5, 0.3], [1.0, 1.0, 1.0], [0.6, 0.0, 0.4]):
        v1, g1 = dv.objective_and_gradient(cp, np.array(theta), reml)
        v2, g2 = dv.objective_and_gradient(plain, np.array(theta), reml)
        assert v1 == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-7, atol=1e-7)
    theta = np.array([0.6, 0.0, 0.4])
    h = 1e-6
    fd = [(dv.objective(cp, theta + h * e, reml) - dv.objective(cp, theta - h * e, reml)) / (2 * h)
          for e in np.eye(3)]
    np.testing.assert_allclose(dv.objective_and_gradient(cp, theta, reml)[1], fd,
                               rtol=1e-5, atol=1e-4)


def test_cross_products_pickle_without_the_schur_pattern_and_rebuild_it():
    import pickle
    cp = dv.cross_products(_crossed_scalar_design())
    raw = pickle.dumps(cp)
    assert b"SchurPattern" not in raw                         # the pattern is left out
    back = pickle.loads(raw)
    assert back.schur is not None
    theta = np.array([0.7, 0.4, 0.2])
    assert dv.objective(back, theta) == dv.objective(cp, theta)
