"""MixedFit as a results object: summary text vs lme4, pickling, predict, lmer, errors."""

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine_designs import FIXTURE_NAMES, hand_design, load_data, load_fixture
from lmmcore import deviance as dv
from lmmcore.errors import FitError
from lmmcore.mixed import MixedFit, fit_design, lmer
from lmmcore.rformat import abbreviate

ENGINE = Path(__file__).resolve().parent / "fixtures" / "engine"
NUMBER = re.compile(r"-?\d+\.?\d*(?:e[-+]?\d+)?")


def _fit(name):
    fx = load_fixture(name)
    return fit_design(hand_design(name), reml=fx["REML"], data_name=fx["dataset"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_summary_layout_matches_lme4(name):
    """Same lines and columns as lme4's print(summary(fit)); numbers within the last digit.

    Our optimum differs from lme4's in the 5th-6th significant digit, which can flip the
    last printed digit; the optimizer line names our optimizer instead of nloptwrap.
    """
    got = _fit(name).summary().splitlines()
    ref = (ENGINE / f"summary_{name}.txt").read_text().splitlines()
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        r = r.replace("optimizer (nloptwrap)", "optimizer (BFGS)")
        assert NUMBER.sub("#", g) == NUMBER.sub("#", r) or len(g) == len(r), (g, r)
        gn = [float(x) for x in NUMBER.findall(g)]
        rn = [float(x) for x in NUMBER.findall(r)]
        assert len(gn) == len(rn), (g, r)
        for a, b in zip(gn, rn):
            last = NUMBER.findall(r)[rn.index(b)]
            step = 10.0 ** -(len(last.split(".")[1]) if "." in last else 0)
            assert abs(a - b) <= 1.01 * step + 1e-4 * abs(b), (g, r)


def test_summary_exact_for_sleepstudy_slope_header_and_tables():
    text = _fit("sleepstudy_slope").summary()
    assert text.startswith("Linear mixed model fit by REML ['lmerMod']\n"
                           "Formula: Reaction ~ Days + (Days | Subject)\n   Data: sleepstudy\n")
    assert "Number of obs: 180, groups:  Subject, 18\n" in text
    assert " Groups   Name        Variance Std.Dev. Corr\n" in text
    assert "Correlation of Fixed Effects:\n     (Intr)\nDays -0.138\n" in text


def test_abbreviate():
    assert abbreviate("(Intercept)", 6) == "(Intr)"
    assert abbreviate("Time:Diet2", 6) == "Tm:Dt2"
    assert abbreviate("Days", 6) == "Days"


@pytest.mark.parametrize("name", ["sleepstudy_slope", "penicillin_crossed", "sleepstudy_uncorrelated"])
def test_pickle_round_trip(name):
    fit = _fit(name)
    fit.summary()
    back = pickle.loads(pickle.dumps(fit))
    assert isinstance(back, MixedFit)
    np.testing.assert_array_equal(back.fixef, fit.fixef)
    np.testing.assert_array_equal(back.theta, fit.theta)
    assert back.summary() == fit.summary()
    f = pickle.loads(pickle.dumps(fit.deviance_function()))
    assert f(fit.theta) == pytest.approx(fit.objective, rel=1e-12)


def test_fit_is_read_only():
    fit = _fit("dyestuff")
    with pytest.raises(AttributeError):
        fit.sigma = 1.0


def test_deviance_function_and_optimizer_record():
    fit = _fit("sleepstudy_slope_ml")
    dev = fit.deviance_function()
    assert dev(fit.theta) == pytest.approx(fit.deviance, rel=1e-12)
    rec = fit.optimizer
    assert rec.theta_start == (1.0, 0.0, 1.0)
    assert rec.evaluations == len(rec.path_objective) == rec.path_theta.shape[0]
    assert rec.path_objective.min() == pytest.approx(fit.objective, rel=1e-12)
    assert rec.converged


def test_predict_fitted_and_new_levels():
    fit = _fit("sleepstudy_slope")
    data = load_data("sleepstudy")
    np.testing.assert_allclose(fit.predict(data).to_numpy(), fit.fitted.to_numpy(), rtol=1e-12)
    new = pd.DataFrame({"Reaction": ["0", "0"], "Days": ["3", "3"], "Subject": ["308", "999"]})
    pred = fit.predict(new).to_numpy()
    fe = fit.fixef
    population = fe["(Intercept)"] + 3 * fe["Days"]
    re = fit.ranef["Subject"].loc["308"]
    assert pred[0] == pytest.approx(population + re["(Intercept)"] + 3 * re["Days"])
    assert pred[1] == pytest.approx(population)
    assert fit.predict(new, include_random=False).to_numpy() == pytest.approx([population] * 2)


def test_linear_predictor_is_predict_on_model_matrices():
    """X beta (+ Z b) on rows given as matrices: the fitted values, and 0 for a level the
    fit has not seen (code -1)."""
    fit = _fit("sleepstudy_slope")
    d = fit.design
    groups = [(np.asarray(t.codes), np.asarray(t.Z_raw)) for t in d.random_terms]
    np.testing.assert_allclose(fit.linear_predictor(d.X, groups), fit.fitted.to_numpy(),
                               rtol=1e-12)
    population = fit.linear_predictor(d.X)
    np.testing.assert_allclose(population, d.X @ fit.fixef.to_numpy(), rtol=1e-12)
    unseen = [(np.full(d.nobs, -1), np.asarray(d.random_terms[0].Z_raw))]
    np.testing.assert_allclose(fit.linear_predictor(d.X, unseen), population, rtol=1e-12)


def test_re_cov_and_condvar_shapes():
    fit = _fit("sleepstudy_slope")
    cov = fit.re_cov("Subject")
    vc = fit.varcorr
    assert cov.loc["(Intercept)", "(Intercept)"] == pytest.approx(vc.vcov[0])
    assert cov.loc["Days", "(Intercept)"] == pytest.approx(vc.vcov[2])
    assert fit.ranef_condvar("Subject").shape == (18, 2, 2)
    unc = _fit("sleepstudy_uncorrelated").re_cov("Subject")
    assert unc.loc["Days", "(Intercept)"] == 0.0


def test_refit_ml_matches_ml_fixture():
    fit = _fit("sleepstudy_slope")
    ml = fit.refit(reml=False)
    assert not ml.reml
    assert ml.deviance == pytest.approx(load_fixture("sleepstudy_slope_ml")["objective"], rel=1e-7)


def test_lmer_through_the_formula_grammar():
    fx = load_fixture("penicillin_crossed")
    df = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "Penicillin.csv")
    fit = lmer(fx["formula"], df, categorical=["plate", "sample"], data_name="Penicillin")
    assert fit.objective <= fx["objective"] * (1 + 1e-9)
    assert fit.theta == pytest.approx(fx["theta"], rel=1e-4)
    assert "Data: Penicillin" in fit.summary()


def test_one_level_per_observation_is_a_fit_error():
    d = hand_design("dyestuff")
    from dataclasses import replace
    term = d.random_terms[0]
    n = d.nobs
    bad = replace(term, levels=tuple(str(i) for i in range(n)), codes=np.arange(n))
    with pytest.raises(FitError, match="as many levels"):
        fit_design(replace(d, random_terms=(bad,)))
    one = replace(term, levels=("A",), codes=np.zeros(n, dtype=np.intp))
    with pytest.raises(FitError, match="only one level"):
        fit_design(replace(d, random_terms=(one,)))


def test_rank_deficient_message():
    from dataclasses import replace
    d = replace(hand_design("sleepstudy_intercept"), dropped_fixed=("Days2",))
    fit = fit_design(d)
    assert fit.lme4_messages[0] == ("fixed-effect model matrix is rank deficient so dropping "
                                    "1 column / coefficient")
    assert "Days2" in fit.messages[0]


def test_large_single_factor_is_batched():
    """2,000 groups x 5 obs with (x | g): fits in well under a second, no dense q x q."""
    rng = np.random.default_rng(1)
    m, k = 2000, 5
    g = np.repeat(np.arange(m), k)
    x = rng.normal(size=m * k)
    b = rng.normal(size=(m, 2)) * [1.0, 0.5]
    y = 1 + 2 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=m * k)
    from lmmcore.structure import MixedDesign, RandomTerm
    term = RandomTerm("g", tuple(str(i) for i in range(m)), g, ("(Intercept)", "x"),
                      np.column_stack([np.ones_like(x), x]))
    d = MixedDesign("y ~ x + (x | g)", "y", y, np.column_stack([np.ones_like(x), x]),
                    ("(Intercept)", "x"), (), (term,), 0, pd.RangeIndex(m * k), None)
    cp = dv.cross_products(d)
    assert cp.q2 == 0 and cp.A11.shape == (m, 2, 2)
    fit = fit_design(d)
    assert fit.fixef["x"] == pytest.approx(2, abs=0.1)
    assert fit.varcorr.sdcor.iloc[0] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_lmer_formula_to_results_matches_lme4(name):
    """The whole pipeline (formula grammar + engine) on every reference fit."""
    fx = load_fixture(name)
    df = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / f"{fx['dataset']}.csv")
    fit = lmer(fx["formula"], df, reml=fx["REML"], categorical=fx["factors"].split(","),
               data_name=fx["dataset"])
    assert fit.objective <= fx["objective"] + 1e-6 * abs(fx["objective"])
    assert list(fit.fixef.index) == list(fx["fixef"])
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(fx["fixef"].values()), rtol=1e-4)
    assert fit.ngroups == fx["ngrps"]
    assert fit.lme4_messages == list(fx["lme4_messages"])
    g = list(fx["ranef"])[0]
    assert [str(v) for v in fit.ranef[g].index] == fx["ranef"][g]["levels"]


def test_lmer_predict_with_new_level_through_encoder():
    df = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "sleepstudy.csv")
    fit = lmer("Reaction ~ Days + (Days | Subject)", df, categorical=["Subject"])
    new = pd.DataFrame({"Days": [0, 9], "Subject": [308, 1234]})
    pred = fit.predict(new)
    fe = fit.fixef
    re = fit.ranef["Subject"].loc["308"]
    assert pred.iloc[0] == pytest.approx(fe["(Intercept)"] + re["(Intercept)"])
    assert pred.iloc[1] == pytest.approx(fe["(Intercept)"] + 9 * fe["Days"])
