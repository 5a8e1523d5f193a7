"""The profiled criterion's factor representations, each checked once against a reference.

``lmmcore.deviance`` has one criterion and three representations of the factor L
(``OneTerm``, ``Blocked``, ``Dense``), plus the Schur-pattern device inside ``Blocked``.
The reference is ``Dense`` (the textbook formulas on q x q matrices), whose gradient is
itself checked against central differences, on and off the boundary.  The values at
fixed theta are checked against lme4 in test_engine_fixtures.py (devfun probes).
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine_designs import FIXTURE_NAMES, crossed_scalar_design, hand_design, load_fixture
from lmmcore import deviance as dv
from lmmcore.design import build_design
from lmmcore.optimize import theta_space

CROSSED = Path(__file__).resolve().parent / "fixtures" / "engine"


def _crossed_slope_designs():
    data = pd.read_csv(CROSSED / "crossed_slopes.csv")
    refs = json.loads((CROSSED / "crossed_slopes.json").read_text())
    formulas = sorted({r["formula"] for r in refs})
    return {f: build_design(f, data, categorical=["g1", "g2"]) for f in formulas}


DESIGNS = {name: hand_design(name) for name in FIXTURE_NAMES} | _crossed_slope_designs()


def _thetas(cp, seed):
    """Three random thetas inside and outside lme4's bounds (every representation is
    sign-symmetric), then one with the first diagonal element exactly 0."""
    rng = np.random.default_rng(seed)
    start = theta_space(cp.layouts).start
    out = [start * rng.uniform(0.3, 1.5) + rng.normal(0, 0.2, cp.n_theta) for _ in range(3)]
    edge = out[0].copy()
    edge[np.flatnonzero(start == 1.0)[0]] = 0.0
    return out + [edge]


def _central_differences(dev, theta, h=1e-6):
    return np.array([(dev(theta + h * e) - dev(theta - h * e)) / (2 * h)
                     for e in np.eye(theta.size)])


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_representation_equals_the_dense_reference(name, reml):
    cp = dv.cross_products(DESIGNS[name])
    kinds = ["blocked"] if cp.rest else ["one_term"] + (
        ["two_column"] if dv.TwoColumnTerm.applies(cp) else [])
    ref = dv.ProfiledDeviance(cp, reml, "dense")
    for i, theta in enumerate(_thetas(cp, seed=len(name))):
        v_ref, g_ref = ref.value_and_gradient(theta)
        assert v_ref == pytest.approx(dv.objective(cp, theta, reml), rel=1e-11)
        for kind in kinds:
            v, g = dv.ProfiledDeviance(cp, reml, kind).value_and_gradient(theta)
            assert v == pytest.approx(v_ref, rel=1e-11), kind
            if g is None:
                # Blocked: a vector term with a zero on its diagonal (the optimiser then
                # takes finite differences); every other case has the analytic gradient
                assert kind == "blocked" and i == 3 and any(lay.k > 1 for lay in cp.layouts)
                continue
            np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6, err_msg=kind)


@pytest.mark.parametrize("name", ["sleepstudy_slope", "orthodont", "penicillin_crossed",
                                  "pastes_nested", "y ~ x + (x | g1) + (x | g2)"])
@pytest.mark.parametrize("reml", [True, False])
def test_dense_reference_gradient_matches_central_differences(name, reml):
    cp = dv.cross_products(DESIGNS[name])
    dev = dv.ProfiledDeviance(cp, reml, "dense")
    for theta in _thetas(cp, seed=3):
        np.testing.assert_allclose(dev.value_and_gradient(theta)[1],
                                   _central_differences(dev, theta), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reml", [True, False])
def test_schur_pattern_equals_plain_sparse_products(reml):
    cp = dv.cross_products(crossed_scalar_design())
    assert cp.schur is not None and dv.representation(cp).__class__ is dv.Blocked
    plain = replace(cp, schur=None)
    for theta in ([0.8, 0.5, 0.3], [1.0, 1.0, 1.0], [0.6, 0.0, 0.4]):
        theta = np.array(theta)
        v1, g1 = dv.ProfiledDeviance(cp, reml).value_and_gradient(theta)
        v2, g2 = dv.ProfiledDeviance(plain, reml).value_and_gradient(theta)
        assert v1 == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-7, atol=1e-7)
    dev = dv.ProfiledDeviance(cp, reml)
    np.testing.assert_allclose(dev.value_and_gradient(theta)[1], _central_differences(dev, theta),
                               rtol=1e-5, atol=1e-4)


def test_representation_is_chosen_by_size(monkeypatch):
    slope = dv.cross_products(DESIGNS["sleepstudy_slope"])
    assert isinstance(dv.ProfiledDeviance(slope, True).rep, dv.TwoColumnTerm)
    assert isinstance(dv.ProfiledDeviance(dv.cross_products(DESIGNS["sleepstudy_intercept"]),
                                          True).rep, dv.OneTerm)
    # a two-column term whose product table would be too large keeps the blocked factor
    monkeypatch.setattr(dv, "PAIR_PRODUCTS_MAX", 3 * 18 * 9 - 1)
    assert isinstance(dv.ProfiledDeviance(slope, True).rep, dv.OneTerm)
    monkeypatch.undo()
    with pytest.raises(ValueError):
        dv.representation(dv.cross_products(DESIGNS["sleepstudy_intercept"]), "two_column")
    assert isinstance(dv.ProfiledDeviance(dv.cross_products(DESIGNS["penicillin_crossed"]), True).rep,
                      dv.Dense)
    with pytest.raises(ValueError):
        dv.representation(dv.cross_products(DESIGNS["penicillin_crossed"]), "one_term")
    with pytest.raises(ValueError):
        dv.representation(dv.cross_products(DESIGNS["sleepstudy_slope"]), "blocked")


def test_fixed_effects_and_criterion_from_any_factor():
    """beta and pwrss are read from LM the same way for every representation."""
    cp = dv.cross_products(DESIGNS["penicillin_crossed"])
    probe = load_fixture("penicillin_crossed")["devfun_probes"][1]
    theta = np.asarray(probe["theta"], float)
    sol = dv.solve(cp, theta, True)
    for kind in ("blocked", "dense"):
        f = dv.representation(cp, kind).factor(theta)
        beta, pwrss = dv.fixed_effects(f.LM, cp.p)
        np.testing.assert_allclose(beta, sol.beta, rtol=1e-12)
        assert pwrss == pytest.approx(sol.pwrss, rel=1e-12)
        assert dv.profiled_criterion(f.logdet, f.LM, cp.n, cp.p, True) == pytest.approx(
            probe["value"], rel=1e-10)


def test_new_response_replaces_only_the_response_blocks():
    design = DESIGNS["sleepstudy_slope"]
    cp = dv.cross_products(design)
    y = np.random.default_rng(2).normal(300, 50, design.nobs)
    fresh = dv.cross_products(replace(design, y=y))
    new = dv.with_response(cp, dv.response_map(cp, design), y)
    for field in ("A11", "C1", "C2", "M0"):
        np.testing.assert_allclose(getattr(new, field), getattr(fresh, field), rtol=1e-12)
    crossed = DESIGNS["y ~ x + (x | g1) + (1 | g2)"]
    cp = dv.cross_products(crossed)
    y = np.random.default_rng(3).normal(size=crossed.nobs)
    new = dv.with_response(cp, dv.response_map(cp, crossed), y)
    fresh = dv.cross_products(replace(crossed, y=y))
    for field in ("C1", "C2", "M0"):
        np.testing.assert_allclose(getattr(new, field), getattr(fresh, field), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name", ["sleepstudy_slope", "chickweight", "orthodont"])
def test_two_column_gradient_on_rows_equals_the_batched_one(name, reml, monkeypatch):
    """TwoColumnTerm's gradient on rows (used from ROW_GRADIENT_MIN_LEVELS levels) equals
    the batched one at thetas inside and outside the bounds and with a zero diagonal."""
    cp = dv.cross_products(DESIGNS[name])
    rep = dv.TwoColumnTerm(cp)
    assert cp.layouts[0].m < dv.ROW_GRADIENT_MIN_LEVELS
    for theta in _thetas(cp, seed=11):
        f = rep.factor(theta)
        batched = rep.gradient(f, reml)
        monkeypatch.setattr(dv, "ROW_GRADIENT_MIN_LEVELS", 1)
        rows = rep.gradient(f, reml)
        monkeypatch.undo()
        np.testing.assert_allclose(rows, batched, rtol=1e-9, atol=1e-9 * np.abs(batched).max())


@pytest.mark.parametrize("reml", [True, False])
def test_solution_from_any_factor_equals_the_blocked_solution(reml):
    """solve() from the optimiser's last factor (two-column or blocked) gives the blocked
    factor's solution; u and b come from the blocked factor when first read."""
    cp = dv.cross_products(DESIGNS["sleepstudy_slope"])
    theta = np.array([0.9, 0.05, 0.2])
    ref = dv.solve(cp, theta, reml)
    for kind in ("two_column", "one_term"):
        dev = dv.ProfiledDeviance(cp, reml, kind)
        dev(theta)
        sol = dev.solution(theta)
        if kind == "two_column":
            assert sol._factor is None                 # the blocked factor waits for u, b
        else:
            assert sol._factor is dev.factor(theta)    # the optimiser's factor, reused
        assert sol.objective == pytest.approx(ref.objective, rel=1e-13)
        np.testing.assert_allclose(sol.beta, ref.beta, rtol=1e-11)
        assert sol.sigma == pytest.approx(ref.sigma, rel=1e-12)
        np.testing.assert_allclose(sol.RX, ref.RX, rtol=1e-11)
        for a, b in zip(sol.u + sol.b, ref.u + ref.b):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
