"""Power by simulation for subjects measured in two conditions.

:func:`simulate_power` draws many data sets from a design (subjects x two conditions x
trials), tests the condition effect in each with the mixed model
``y ~ condition + (1 | subject)`` (lmerTest's Satterthwaite t-test, ``MixedFit.coef_table``)
and with the paired t-test on the subjects' condition means, and reports how often each
detects the effect at ``alpha``, and how often the lmer fit was singular.

Power is a property of a design and an assumed true effect, computed before the data
exist.  "Observed power" (the power at the effect estimated from the data at hand) is a
one-to-one function of the p-value and adds nothing to it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.errors import LmmError
from lmmcore.simulate import MAX_REPETITIONS, _count, _real

__all__ = ["simulate_power", "power_design"]

#: The largest design (rows) a power simulation fits, many times over.
MAX_POWER_ROWS = 20_000


def power_design(n_subjects: int, n_trials: int = 1) -> pd.DataFrame:
    """The rows of the design: ``subject`` (s01, s02, ...), ``condition`` (A, B), one row
    per trial; the response is added by :func:`simulate_power`."""
    J = _count("n_subjects", n_subjects, 2, "the paired comparison needs at least 2 subjects.")
    k = _count("n_trials", n_trials, 1, "each subject needs at least 1 trial per condition.")
    if 2 * J * k > MAX_POWER_ROWS:
        raise LmmError(f"{J} subjects x 2 conditions x {k} trials is {2 * J * k:,} rows per data set; "
                       f"the limit is {MAX_POWER_ROWS:,}.")
    width = len(str(J))
    subject = np.repeat([f"s{j + 1:0{width}d}" for j in range(J)], 2 * k)
    condition = np.tile(np.repeat(["A", "B"], k), J)
    return pd.DataFrame({"subject": subject, "condition": condition})


def simulate_power(n_subjects: int, effect: float, sd_subject: float, sigma: float, *, n_trials: int = 1,
                   n_sims: int = 200, alpha: float = 0.05, seed=None, progress=None) -> pd.DataFrame:
    """Share of simulated studies in which the lmer test and the paired t-test detect the effect.

    Parameters
    ----------
    n_subjects : int
        Subjects (at least 2), each measured in conditions A and B.
    effect : float
        True difference B - A.
    sd_subject : float
        SD of the subjects' random intercepts.
    sigma : float
        Residual SD (above 0).
    n_trials : int
        Trials per subject and condition.
    n_sims : int
        Simulated data sets, 10 to :data:`lmmcore.simulate.MAX_REPETITIONS`.
    alpha : float
        Significance level, strictly between 0 and 1.
    seed : int, optional
    progress : callable, optional
        ``progress(done, total)`` after each data set.

    Returns
    -------
    pandas.DataFrame
        Indexed ``lmer`` (Satterthwaite p < alpha for ``conditionB``), ``paired t``
        (``scipy.stats.ttest_rel`` on the subject means per condition) and ``singular``
        (share of lmer fits that were singular); columns ``share`` and ``mc_se``, the
        Monte Carlo standard error ``sqrt(share (1 - share) / n_sims)``.  ``attrs["runs"]``
        holds every data set's p-values and singular flag.

    Notes
    -----
    ``y = b_subject + effect [condition = B] + e`` with ``b ~ N(0, sd_subject^2)`` and
    ``e ~ N(0, sigma^2)``.  The first data set is fitted with ``lmer``, the others on its
    design with the new response.  With one trial per condition and a
    non-singular fit, the lmer t-test is the paired t-test.
    """
    from lmmcore.mixed import lmer

    sims = _count("n_sims", n_sims, 10, "use at least 10 simulated data sets.")
    if sims > MAX_REPETITIONS:
        raise LmmError(f"{sims:,} simulated data sets is more than the limit of {MAX_REPETITIONS:,}; "
                       "1,000 already give power within about 3 percentage points.")
    a = _real("alpha", alpha)
    if not 0.0 < a < 1.0:
        raise LmmError(f"alpha must lie strictly between 0 and 1 (got {a:g}).")
    delta = _real("effect", effect)
    tau = _real("sd_subject", sd_subject, nonnegative=True)
    s = _real("sigma", sigma, nonnegative=True)
    if s == 0:
        raise LmmError("sigma (the residual SD) must be above 0.")
    design = power_design(n_subjects, n_trials)
    J = design["subject"].nunique()
    k = len(design) // (2 * J)
    codes = np.repeat(np.arange(J), 2 * k)
    is_b = (design["condition"] == "B").to_numpy()
    rng = np.random.default_rng(seed)
    base = None
    rows = []
    for r in range(sims):
        y = tau * rng.standard_normal(J)[codes] + delta * is_b + s * rng.standard_normal(len(design))
        if base is None:
            base = lmer("y ~ condition + (1 | subject)", design.assign(y=y), categorical=["subject", "condition"])
            fit = base
        else:
            fit = base.refit(y)  # same design, new response
        p_lmer = float(fit.coef_table("satterthwaite").loc["conditionB", "Pr(>|t|)"])
        means = y.reshape(J, 2, k).mean(axis=2)
        p_t = float(stats.ttest_rel(means[:, 1], means[:, 0]).pvalue)
        rows.append((r + 1, p_lmer, p_t, bool(fit.is_singular)))
        if progress is not None:
            progress(r + 1, sims)
    runs = pd.DataFrame(rows, columns=["run", "p_lmer", "p_paired_t", "singular"])
    shares = {"lmer": float((runs["p_lmer"] < a).mean()), "paired t": float((runs["p_paired_t"] < a).mean()),
              "singular": float(runs["singular"].mean())}
    out = pd.DataFrame({"share": shares,
                        "mc_se": {m: math.sqrt(v * (1 - v) / sims) for m, v in shares.items()}})
    out.attrs["runs"] = runs
    return out
