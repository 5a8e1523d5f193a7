"""Power by simulation: the paired t-test's share against its exact power (noncentral t),
the lmer test equal to the paired t-test where the fit is not singular, and the checks."""

import numpy as np
import pytest
from scipy import stats

from lmmcore import LmmError
from lmmcore.power import power_design, simulate_power


def test_design_rows():
    d = power_design(3, 2)
    assert d["subject"].tolist() == ["s1"] * 4 + ["s2"] * 4 + ["s3"] * 4
    assert d["condition"].tolist()[:4] == ["A", "A", "B", "B"]


def test_shares_agree_with_exact_power_within_monte_carlo_error():
    """12 subjects, one trial per condition, effect 1, subject SD 1, sigma 1.

    Paired differences have SD sqrt(2) sigma, so the t-test's power is exactly
    P(|T| > t_crit) for T noncentral t with 11 df and ncp 1 / (sqrt(2) / sqrt(12)).
    Tolerance: 4 Monte Carlo standard errors of a share from 300 data sets.
    """
    n, effect, sigma, sims = 12, 1.0, 1.0, 300
    out = simulate_power(n, effect, 1.0, sigma, n_sims=sims, seed=5)
    ncp = effect / (np.sqrt(2) * sigma / np.sqrt(n))
    crit = stats.t.ppf(0.975, n - 1)
    exact = stats.nct.sf(crit, n - 1, ncp) + stats.nct.cdf(-crit, n - 1, ncp)
    share = out.loc["paired t", "share"]
    se = np.sqrt(exact * (1 - exact) / sims)
    assert abs(share - exact) <= 4 * se, (share, exact)
    assert out.loc["paired t", "mc_se"] == pytest.approx(np.sqrt(share * (1 - share) / sims))
    runs = out.attrs["runs"]
    # one trial per condition: a non-singular lmer's Satterthwaite test is the paired t-test
    ok = ~runs["singular"]
    assert ok.sum() > 200
    np.testing.assert_allclose(runs.loc[ok, "p_lmer"], runs.loc[ok, "p_paired_t"], rtol=2e-3, atol=1e-6)
    assert out.loc["singular", "share"] == pytest.approx(1 - ok.mean())


def test_progress_and_seed():
    seen = []
    a = simulate_power(5, 0.5, 1.0, 1.0, n_trials=3, n_sims=10, seed=1, progress=lambda i, n: seen.append(i))
    b = simulate_power(5, 0.5, 1.0, 1.0, n_trials=3, n_sims=10, seed=1)
    assert seen == list(range(1, 11))
    assert a.equals(b)


@pytest.mark.parametrize("kwargs,words", [
    ({"n_subjects": 1}, "at least 2 subjects"),
    ({"n_sims": 5000}, "limit"),
    ({"alpha": 1.2}, "strictly between 0 and 1"),
    ({"sigma": 0}, "above 0"),
    ({"n_trials": 0}, "at least 1 trial"),
])
def test_bad_settings(kwargs, words):
    args = {"n_subjects": 10, "effect": 1.0, "sd_subject": 1.0, "sigma": 1.0, **kwargs}
    with pytest.raises(LmmError, match=words):
        simulate_power(args.pop("n_subjects"), args.pop("effect"), args.pop("sd_subject"), args.pop("sigma"),
                       **args)
