"""Simulated groups, pooling error against the truth, repetitions, presets and MixedFit.simulate."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmcore
from lmmcore import LmmError
from lmmcore.simulate import (MAX_REPETITIONS, PRESETS, known_variance_rmse, pooling_error,
                              repeat_pooling_error, simulate_groups, simulate_scenario)

ROOT = Path(__file__).resolve().parents[1]


def test_simulate_groups_shape_labels_and_truth():
    data, truth = simulate_groups(12, 4, intercept=10, slope=2, sd_intercept=3, sd_slope=1, corr=0.5,
                                  sigma=0.5, seed=4)
    assert list(data.columns) == ["y", "x", "group"] and len(data) == 48
    assert data["x"].tolist()[:4] == [0.0, 1.0, 2.0, 3.0]
    assert list(truth.index) == sorted(truth.index) == [f"g{j:02d}" for j in range(1, 13)]
    assert list(truth.columns) == ["intercept", "slope"]
    # y is the group's true line plus noise of SD sigma
    line = truth.loc[data["group"], "intercept"].to_numpy() + truth.loc[data["group"], "slope"].to_numpy() * data["x"]
    assert np.std(data["y"] - line) < 1.0
    again, truth2 = simulate_groups(12, 4, intercept=10, slope=2, sd_intercept=3, sd_slope=1, corr=0.5,
                                    sigma=0.5, seed=4)
    pd.testing.assert_frame_equal(data, again)
    pd.testing.assert_frame_equal(truth, truth2)


def test_sizes_take_the_first_x_values():
    data, _ = simulate_groups(3, 4, x=[-1, 0, 1, 2], sizes=[1, 4, 2], seed=0)
    assert data.groupby("group")["x"].apply(list).to_dict() == {
        "g1": [-1.0], "g2": [-1.0, 0.0, 1.0, 2.0], "g3": [-1.0, 0.0]}


def test_random_effects_have_the_asked_covariance():
    _, truth = simulate_groups(20000, 1, intercept=1, slope=-2, sd_intercept=2, sd_slope=0.5, corr=-0.6, seed=1)
    b = truth - [1, -2]
    # 20,000 draws: the SDs' standard errors are about 0.5 %, the correlation's about 0.005.
    assert b.std().to_numpy() == pytest.approx([2, 0.5], rel=0.03)
    assert b.corr().iloc[0, 1] == pytest.approx(-0.6, abs=0.03)


@pytest.mark.parametrize("kwargs,words", [
    ({"n_groups": 1}, "one group is not enough"),
    ({"n_per_group": 0}, "at least 1 observation"),
    ({"corr": 1.0}, "strictly between -1 and 1"),
    ({"corr": -1.5}, "strictly between -1 and 1"),
    ({"sigma": 0}, "above 0"),
    ({"sd_slope": -1}, "cannot be negative"),
    ({"sizes": [1, 0, 3, 3, 3]}, "at least 1 observation"),
    ({"n_groups": 10**6, "n_per_group": 10**3}, "the limit is"),
    ({"n_groups": 2.5}, "whole number"),
])
def test_bad_settings_get_a_clear_message(kwargs, words):
    args = {"n_groups": 5, "n_per_group": 3, **kwargs}
    with pytest.raises(LmmError, match=words):
        simulate_groups(args.pop("n_groups"), args.pop("n_per_group"), **args)


def test_too_many_repetitions():
    with pytest.raises(LmmError, match="limit"):
        repeat_pooling_error(MAX_REPETITIONS + 1)


def test_pooling_error_matches_a_hand_computation_and_leaves_missing_groups_out():
    data, truth = simulate_groups(6, 4, slope=1, sd_intercept=2, sd_slope=0.5, sigma=1,
                                  sizes=[1, 4, 4, 2, 4, 3], seed=2)
    est = lmmcore.pooling_estimates(data, "y", "x", "group")
    err = pooling_error(est, truth)
    assert list(err.index) == ["complete", "no", "partial"]
    assert err["n_groups"].tolist() == [6, 5, 6]  # g1 has one row: no line, counted out
    no = est.method("no")
    diff = (no[["intercept", "slope"]] - truth).dropna()
    assert len(diff) == 5
    np.testing.assert_allclose(err.loc["no", ["intercept", "slope"]].to_numpy(float),
                               np.sqrt((diff ** 2).mean()).to_numpy(), rtol=1e-12)
    part = est.method("partial")
    np.testing.assert_allclose(err.loc["partial", "intercept"],
                               np.sqrt(((part["intercept"] - truth["intercept"]) ** 2).mean()), rtol=1e-12)


def test_pooling_error_rejects_other_tables():
    with pytest.raises(LmmError, match="pooling_estimates"):
        pooling_error(pd.DataFrame({"a": [1]}), pd.DataFrame({"intercept": [1.0], "slope": [0.0]}))
    with pytest.raises(LmmError, match="pooling_estimates"):
        pooling_error(lmmcore.pooling_estimates(pd.DataFrame({"y": [1.0, 2, 3, 5], "x": [0.0, 1, 0, 1],
                                                              "group": ["a", "a", "b", "b"]}), "y", "x", "group",
                                                random="intercept").table, pd.DataFrame())


def test_repeated_simulation_agrees_with_known_variance_theory():
    """J = 20 groups of 3 at x = -1, 0, 1, tau = sigma = 25, random intercepts only.

    Theory (variances known): no pooling sigma/sqrt(3) = 14.43, partial pooling
    (1/tau^2 + 3/sigma^2)^(-1/2) = 12.5, complete pooling sqrt(tau^2 (1 - 1/J) + sigma^2/60) = 24.58.
    The mean of the runs' squared RMSE estimates the squared value; its Monte Carlo standard
    error is the SD of the runs' squared RMSE / sqrt(runs).  Tolerance: 4 Monte Carlo SEs; for
    partial pooling 4 SEs + 0.5, since lmer estimates tau and sigma (a little extra error) where
    the theory knows them.
    """
    theory = known_variance_rmse(20, 3, 25, 25)
    assert theory.round(2).to_dict() == {"complete": 24.58, "no": 14.43, "partial": 12.5}
    runs = repeat_pooling_error(200, random="intercept", seed=11, n_groups=20, n_per_group=3,
                                centre_x=True, intercept=0, slope=0, sd_intercept=25, sd_slope=0, sigma=25)
    assert len(runs) == 600
    for method, extra in (("complete", 0.0), ("no", 0.0), ("partial", 0.5)):
        mse = runs.loc[runs["method"] == method, "intercept"].to_numpy() ** 2
        rmse = np.sqrt(mse.mean())
        se = mse.std(ddof=1) / np.sqrt(mse.size) / (2 * rmse)  # delta method for the square root
        assert abs(rmse - theory[method]) <= 4 * se + extra, (method, rmse, se)
    mean = runs.groupby("method")["intercept"].mean()
    assert mean["partial"] < mean["no"] < mean["complete"]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_simulates_and_fits(preset):
    p = PRESETS[preset]
    assert p.title and len(p.explanation) > 60
    data, truth = simulate_scenario(preset, seed=1, **p.settings)
    assert data["group"].nunique() == p.settings["n_groups"] == len(truth)
    est = lmmcore.pooling_estimates(data, "y", "x", "group")
    err = pooling_error(est, truth)
    assert np.isfinite(err.loc["partial", "intercept"])


def test_presets_do_what_they_say():
    s = PRESETS["simpson"].settings
    data, truth = simulate_scenario("simpson", seed=3, **s)
    est = lmmcore.pooling_estimates(data, "y", "x", "group")
    assert est.method("complete")["slope"].iloc[0] < 0 < truth["slope"].min()
    data, truth = simulate_scenario("imbalance", seed=3, **PRESETS["imbalance"].settings)
    sizes = data.groupby("group").size()
    assert (sizes <= 2).sum() == 15 and sizes.max() == 10
    data, truth = simulate_scenario("outlier", seed=3, **PRESETS["outlier"].settings)
    gap = truth["intercept"].iloc[0] - truth["intercept"].iloc[1:].mean()
    assert gap > 3 * truth["intercept"].iloc[1:].std()
    data, _ = simulate_scenario("mixture", seed=3, **PRESETS["mixture"].settings)
    fit = lmmcore.lmer("y ~ x + (x | group)", data)
    resid = fit.residuals.groupby(data["group"]).std()
    assert resid.iloc[6:].mean() > 3 * resid.iloc[:6].mean()
    data, _ = simulate_scenario("singular", seed=3, **PRESETS["singular"].settings)
    assert lmmcore.lmer("y ~ x + (1 | group)", data).is_singular


def test_repeat_reports_progress_and_singular_fits():
    seen = []
    runs = repeat_pooling_error(3, seed=1, progress=lambda i, n: seen.append((i, n)), n_groups=5, n_per_group=4)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert set(runs.columns) == {"rep", "method", "intercept", "slope", "n_groups", "singular"}


def test_mixed_fit_simulate_has_the_fitted_moments():
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", data, categorical=["Subject"])
    sims = fit.simulate(4000, seed=1)
    assert sims.shape == (180, 4000) and list(sims.columns[:2]) == ["sim_1", "sim_2"]
    pd.testing.assert_frame_equal(sims.iloc[:, :3], fit.simulate(4000, seed=1).iloc[:, :3])
    X = np.column_stack([np.ones(180), data["Days"]])
    cov = fit.re_cov("Subject").to_numpy()
    var = np.einsum("ni,ij,nj->n", X, cov, X) + fit.sigma ** 2
    # mean within 4.5 standard errors at every one of the 180 rows; variance within 10 %
    z = (sims.mean(axis=1) - X @ fit.fixef.to_numpy()) / np.sqrt(var / 4000)
    assert np.abs(z).max() < 4.5
    np.testing.assert_allclose(sims.var(axis=1), var, rtol=0.1)
    with pytest.raises(LmmError, match="nsim"):
        fit.simulate(0)
