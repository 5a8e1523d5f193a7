"""Properties of the profiled deviance that hold for any data (hypothesis)."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_designs import hand_design
from lmmcore import deviance as dv
from lmmcore.mixed import fit_design
from lmmcore.optimize import theta_space

DESIGNS = ["sleepstudy_slope", "penicillin_crossed", "pastes_nested", "orthodont"]
_BASE = {name: hand_design(name) for name in DESIGNS}


def _permuted(design, perm):
    terms = tuple(replace(t, codes=t.codes[perm], Z_raw=t.Z_raw[perm]) for t in design.random_terms)
    return replace(design, y=design.y[perm], X=design.X[perm], random_terms=terms,
                   row_index=design.row_index[perm])


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(DESIGNS), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(0.05, 3.0), reml=st.booleans())
def test_objective_invariant_to_row_order(name, seed, scale, reml):
    design = _BASE[name]
    perm = np.random.default_rng(seed).permutation(design.nobs)
    cp, cpp = dv.cross_products(design), dv.cross_products(_permuted(design, perm))
    theta = theta_space(cp.layouts).start * scale
    assert dv.objective(cpp, theta, reml) == pytest.approx(dv.objective(cp, theta, reml), rel=1e-10)


def _ols(design):
    X, y = design.X, design.y
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(np.sum((y - X @ beta) ** 2))
    n = len(y)
    loglik = -0.5 * n * (np.log(2 * np.pi * rss / n) + 1)
    return beta, rss, loglik


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(DESIGNS), eps=st.sampled_from([0.0, 1e-9, 1e-7]))
def test_zero_random_variance_is_ordinary_least_squares(name, eps):
    """As theta -> 0 the lmer estimates are the OLS ones and the ML deviance is lm's -2 logLik."""
    design = _BASE[name]
    cp = dv.cross_products(design)
    theta = np.full(cp.n_theta, eps)
    beta, rss, loglik = _ols(design)
    sol = dv.solve(cp, theta, reml=False)
    np.testing.assert_allclose(sol.beta, beta, rtol=1e-5, atol=1e-8)
    assert sol.pwrss == pytest.approx(rss, rel=1e-6)
    assert dv.objective(cp, theta, reml=False) == pytest.approx(-2 * loglik, rel=1e-9)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_gradient_matches_finite_differences(seed):
    """The analytic gradient used by the optimiser agrees with central differences."""
    rng = np.random.default_rng(seed)
    design = _BASE["penicillin_crossed"] if seed % 2 else _BASE["sleepstudy_slope"]
    cp = dv.cross_products(design)
    theta = theta_space(cp.layouts).start * rng.uniform(0.3, 2.0, cp.n_theta)
    for reml in (True, False):
        val, grad = dv.ProfiledDeviance(cp, reml).value_and_gradient(theta)
        h = 1e-5
        fd = [(dv.objective(cp, theta + h * e, reml) - dv.objective(cp, theta - h * e, reml)) / (2 * h)
              for e in np.eye(cp.n_theta)]
        np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)


def test_fit_is_row_order_free():
    design = _BASE["sleepstudy_slope"]
    perm = np.random.default_rng(3).permutation(design.nobs)
    a, b = fit_design(design), fit_design(_permuted(design, perm))
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-6)
