"""The optimiser: the sign symmetry it relies on, its path, and lme4's checks."""

import numpy as np
import pytest

from engine_designs import FIXTURE_NAMES, crossed_scalar_design, hand_design, load_fixture
from lmmcore import deviance as dv
from lmmcore.mixed import fit_design
from lmmcore.optimize import ThetaSpace, gradient_hessian, minimize_theta, theta_space


def _value_and_gradient(cp, theta, reml, kind=None):
    return dv.ProfiledDeviance(cp, reml, kind).value_and_gradient(theta)


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
    space = theta_space(cp.layouts)
    flipped[space.lower == 0] *= -1.0                            # every diagonal negative
    signs = space.canonical_signs(flipped)
    canon = signs * flipped
    assert np.all(canon >= space.lower)
    v1, g1 = _value_and_gradient(cp, flipped, fx["REML"])
    v2, g2 = _value_and_gradient(cp, canon, fx["REML"])
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(signs * g1, g2, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_path_stays_inside_lme4_bounds_and_ends_at_the_optimum(name):
    fx = load_fixture(name)
    fit = fit_design(hand_design(name), reml=fx["REML"])
    rec = fit.optimizer
    space = theta_space(fit._cp.layouts)
    assert np.all(rec.path_theta >= space.lower)
    assert rec.theta_start == tuple(space.start)
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
    val, g = _value_and_gradient(cp, theta, True, "blocked")
    h = 1e-6
    fd = (dv.objective(cp, theta + [h, 0]) - dv.objective(cp, theta - [h, 0])) / (2 * h)
    assert g[1] == 0.0
    assert g[0] == pytest.approx(fd, rel=1e-6)


def test_hessian_from_the_gradient_matches_lme4_deriv12():
    fx = load_fixture("sleepstudy_slope")
    fit = fit_design(hand_design("sleepstudy_slope"), reml=True)
    dev = fit.deviance_function()
    g, H, source = gradient_hessian(dev, fit.theta, fit.objective)
    assert source == "finite differences"
    from lmmcore.optimize import deriv12
    g12, H12 = deriv12(dev, fit.theta, fit.objective)
    np.testing.assert_allclose(H, H12, rtol=1e-3, atol=1e-2)
    assert np.max(np.abs(g)) < 1e-3
    assert fx["objective"] >= fit.objective - 1e-9


class _DoubleWell:
    """(t0^2 - 1)^2 + t1^2: lme4's start t0 = 0 is a saddle on the boundary."""

    def __call__(self, t):
        return float((t[0] ** 2 - 1) ** 2 + t[1] ** 2)

    def value_and_gradient(self, t):
        return self(t), np.array([4 * t[0] * (t[0] ** 2 - 1), 2 * t[1]])


_DOUBLE_WELL_SPACE = ThetaSpace(lower=np.zeros(2), start=np.array([0.0, 1.0]),
                                diag_index=np.arange(2))


def test_restart_edge_leaves_a_saddle_on_the_boundary():
    theta, value, rec = minimize_theta(_DoubleWell(), _DOUBLE_WELL_SPACE)
    assert theta[0] == pytest.approx(1.0, abs=1e-6)
    assert value < 1e-10 and rec.converged


def test_singular_fit_reports_an_exact_zero():
    fx = load_fixture("dyestuff2_singular")
    fit = fit_design(hand_design("dyestuff2_singular"), reml=fx["REML"])
    assert fit.theta[0] == 0.0 and fit.is_singular
    assert fit.objective <= fx["objective"] + 1e-9


def test_cross_products_pickle_without_the_schur_pattern_and_rebuild_it():
    import pickle
    cp = dv.cross_products(crossed_scalar_design())
    raw = pickle.dumps(cp)
    assert b"SchurPattern" not in raw                         # the pattern is left out
    back = pickle.loads(raw)
    assert back.schur is not None
    theta = np.array([0.7, 0.4, 0.2])
    assert dv.objective(back, theta) == dv.objective(cp, theta)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_convergence_verdict_from_the_optimizer_equals_the_differences_one(name):
    """lme4's checkConv from BFGS's own Hessian gives the verdict that a fresh
    finite-difference Hessian gives (and lme4's: the fixture's messages)."""
    from lmmcore.optimize import check_convergence
    fx = load_fixture(name)
    fit = fit_design(hand_design(name), reml=fx["REML"])
    dev, rec = fit.deviance_function(), fit.optimizer
    lower = theta_space(fit._cp.layouts).lower
    quick = check_convergence(dev, fit.theta, fit.objective, lower, rec.final_gradient,
                              rec.final_hessian)
    slow = check_convergence(dev, fit.theta, fit.objective, lower)
    assert quick.hessian_source == ("" if fx["singular"] else "optimizer")
    assert (quick.converged, quick.singular, quick.lme4_messages) == \
        (slow.converged, slow.singular, slow.lme4_messages)
    assert list(quick.lme4_messages) == fx["lme4_messages"]
    if not fx["singular"]:
        np.testing.assert_allclose(np.linalg.eigvalsh(rec.final_hessian),
                                   np.linalg.eigvalsh(gradient_hessian(dev, fit.theta, fit.objective)[1]),
                                   rtol=0.1)


def test_non_converged_reference_cases_get_lme4_hessian_verdicts():
    """lme4 flags sleepstudy with Days x100 / x1000 (tests/fixtures/engine/
    make_nonconverged.R): a very large eigenvalue, and a large eigenvalue ratio at x1000.
    The Hessian messages are the same here (from differences: the optimizer's Hessian is
    not trusted near lme4's thresholds); lme4's max|grad| message comes from BOBYQA
    stopping early, and our optimum is lower."""
    import json
    from pathlib import Path

    import pandas as pd

    from lmmcore.mixed import lmer
    root = Path(__file__).resolve().parent
    refs = json.loads((root / "fixtures" / "engine" / "nonconverged.json").read_text())
    data = pd.read_csv(root.parent / "data" / "sleepstudy.csv")
    data["Subject"] = data["Subject"].astype(str)
    for ref in refs:
        fit = lmer(ref["formula"], data.assign(Dayx=data["Days"] * ref["scale"]))
        assert not fit.converged and not fit.is_singular
        assert fit._check.hessian_source == "finite differences"
        assert fit.objective <= ref["objective"]
        hessian_msgs = [m for m in ref["messages"] if not m.startswith("Model failed to converge with")]
        assert fit.lme4_messages == hessian_msgs
        np.testing.assert_allclose(np.linalg.eigvalsh(gradient_hessian(
            fit.deviance_function(), fit.theta, fit.objective)[1])[0],
            min(ref["hessian_eigenvalues"]), rtol=0.2)


def test_fixed_theta_elements_for_a_profile():
    """A profile point: theta_0 held fixed, the rest optimised from the fit's optimum."""
    fit = fit_design(hand_design("sleepstudy_slope"), reml=True)
    dev, space = fit.deviance_function(), theta_space(fit._cp.layouts)
    at_opt, value, rec = minimize_theta(dev, space, fit.theta, fit.optimizer.final_hessian,
                                        fixed={0: fit.theta[0]})
    assert value == pytest.approx(fit.objective, abs=1e-8)
    np.testing.assert_allclose(at_opt, fit.theta, atol=1e-5)
    assert rec.path_theta.shape[1] == 3 and np.all(rec.path_theta[:, 0] == fit.theta[0])
    previous, theta = fit.objective, at_opt
    for t0 in (1.1, 1.3, 1.6):                        # moving away: the profile rises
        theta, value, rec = minimize_theta(dev, space, theta, fixed={0: t0})
        assert theta[0] == t0 and value > previous and rec.converged
        # no better point with theta_0 = t0 from lme4's start
        assert value <= minimize_theta(dev, space, fixed={0: t0})[1] + 1e-8
        previous = value
    # a fixed off-diagonal (correlation) element
    theta, value, _ = minimize_theta(dev, space, fit.theta, fixed={1: 0.0})
    assert theta[1] == 0.0 and value >= fit.objective
    with pytest.raises(ValueError):
        minimize_theta(dev, space, fixed={2: -0.5})


def test_one_blas_thread_nests_and_restores_the_thread_count():
    """The outermost context sets BLAS to one thread and the last to close restores it:
    a session whose fit ends first must not restore the threads under another's."""
    import threading

    from threadpoolctl import threadpool_info

    from lmmcore.optimize import one_blas_thread

    def blas_threads():
        return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    before = blas_threads()
    seen = []

    def other_session():
        with one_blas_thread():
            seen.append(blas_threads())

    with one_blas_thread():
        seen.append(blas_threads())
        with one_blas_thread():
            seen.append(blas_threads())
        seen.append(blas_threads())
        worker = threading.Thread(target=other_session)
        worker.start()
        worker.join(5)
        seen.append(blas_threads())            # the other session closed before this one
    # (restored here, on the main thread: OpenBLAS ignores a raise of its thread count
    # asked from another thread, so a server's script threads keep one thread)
    assert seen == [[1]] * 5 or not before     # (no BLAS found: nothing to set)
    assert blas_threads() == before
