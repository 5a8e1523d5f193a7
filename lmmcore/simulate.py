"""Simulated grouped data with the truth known, and how far each pooling method misses it.

On real data nobody knows the groups' true intercepts and slopes.  Here they are drawn
first and the data from them, so complete, no and partial pooling can be scored:

* :func:`simulate_groups` draws ``y = (intercept + b0_j) + (slope + b1_j) x + e`` for
  ``n_groups`` groups, with ``(b0_j, b1_j)`` bivariate normal (SDs ``sd_intercept``,
  ``sd_slope``, correlation ``corr``) and ``e ~ N(0, sigma^2)``; it returns the data and
  the truth (each group's ``intercept + b0_j`` and ``slope + b1_j``).
* :func:`simulate_scenario` adds the page's imbalance slider and its teaching presets
  (:data:`PRESETS`: an outlier group, Simpson's paradox, ...).
* :func:`pooling_error` scores ``pooling_estimates`` against the truth (RMSE over groups).
* :func:`repeat_pooling_error` runs the same study again and again (new random effects
  and residuals, same design) and scores each run; :func:`known_variance_rmse` gives the
  values theory predicts for the intercepts when the variances are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lmmcore.errors import DataError, LmmError

__all__ = ["simulate_groups", "simulate_scenario", "pooling_error", "repeat_pooling_error",
           "known_variance_rmse", "PRESETS", "Preset", "DEFAULT_SETTINGS", "MAX_ROWS", "MAX_REPETITIONS"]

#: The largest simulated table (rows): enough for any lecture example, small enough to fit fast.
MAX_ROWS = 100_000
#: The most repetitions :func:`repeat_pooling_error` runs in one call.
MAX_REPETITIONS = 1000
METHODS = ("complete", "no", "partial")


# --------------------------------------------------------------------------- checks

def _count(name: str, value, low: int, too_few: str) -> int:
    """A whole number of at least ``low``; ``too_few`` says why fewer will not do."""
    try:
        v = int(value)
        whole = not isinstance(value, (bool, np.bool_)) and v == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise LmmError(f"{name} must be a whole number (got {value!r}).")
    if v < low:
        raise LmmError(f"{name} is {v}: {too_few}")
    return v


_TOO_FEW_GROUPS = ("one group is not enough. Pooling compares groups, and a mixed model needs "
                   "several to estimate how much they vary: use at least 2 (better 5 or more).")
_TOO_FEW_ROWS = "each group needs at least 1 observation."


def _real(name: str, value, *, nonnegative: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LmmError(f"{name} must be a number (got {value!r}).") from None
    if not math.isfinite(v):
        raise LmmError(f"{name} must be a finite number (got {value!r}).")
    if nonnegative and v < 0:
        raise LmmError(f"{name} is a standard deviation and cannot be negative (got {v:g}).")
    return v


@dataclass(frozen=True)
class _Design:
    """What stays fixed when the same study is run again: groups, rows, predictor values."""

    labels: tuple           # group labels, in order
    codes: np.ndarray       # group index of each row
    x: np.ndarray           # predictor value of each row
    sigma_group: np.ndarray  # residual SD in each group
    shift: np.ndarray       # fixed extra intercept of each group (presets), added to the truth
    intercept: float
    slope: float
    cov_factor: np.ndarray  # lower Cholesky factor of the random effects' 2 x 2 covariance


def _design(n_groups, n_per_group, x, intercept, slope, sd_intercept, sd_slope, corr, sigma,
            sizes) -> _Design:
    J = _count("n_groups", n_groups, 2, _TOO_FEW_GROUPS)
    n = _count("n_per_group", n_per_group, 1, _TOO_FEW_ROWS)
    if max(J, n) > MAX_ROWS or (sizes is None and J * n > MAX_ROWS):
        raise LmmError(f"That would simulate {J:,} groups x {n:,} observations; the limit is "
                       f"{MAX_ROWS:,} rows. Use fewer groups or fewer observations per group.")
    if x is None:
        xs = np.arange(n, dtype=float)
    else:
        xs = np.asarray(x, dtype=float).ravel()
        if xs.size != n:
            raise LmmError(f"x must give one predictor value per observation in a group: "
                           f"{n} values (got {xs.size}).")
        if not np.all(np.isfinite(xs)):
            raise LmmError("x must hold finite numbers.")
    r = _real("corr", corr)
    if not -1.0 < r < 1.0:
        raise LmmError(f"The correlation of the random intercept and slope must lie strictly "
                       f"between -1 and 1 (got {r:g}).")
    sd0 = _real("sd_intercept", sd_intercept, nonnegative=True)
    sd1 = _real("sd_slope", sd_slope, nonnegative=True)
    s = _real("sigma", sigma, nonnegative=True)
    if s == 0:
        raise LmmError("sigma (the residual SD) must be above 0: without noise every method "
                       "recovers the truth and a mixed model cannot be fitted.")
    if sizes is None:
        counts = np.full(J, n)
    else:
        counts = np.asarray(sizes).ravel()
        if counts.size != J:
            raise LmmError(f"sizes must give one count per group: {J} values (got {counts.size}).")
        if not np.all(np.isfinite(counts.astype(float))) or np.any(counts != np.round(counts)):
            raise LmmError("sizes must be whole numbers.")
        counts = counts.astype(int)
        if counts.min() < 1:
            raise LmmError("Every group needs at least 1 observation: a size of 0 leaves a "
                           "group with no data (drop the group instead).")
        if counts.max() > n:
            raise LmmError(f"A group cannot have more observations than there are x values "
                           f"({n}); the largest size was {counts.max()}.")
    if int(counts.sum()) > MAX_ROWS:
        raise LmmError(f"That would simulate {int(counts.sum()):,} rows; the limit is {MAX_ROWS:,}. "
                       "Use fewer groups or fewer observations per group.")
    width = len(str(J))
    labels = tuple(f"g{j + 1:0{width}d}" for j in range(J))  # sorts as text in group order
    codes = np.repeat(np.arange(J), counts)
    xrow = np.concatenate([xs[:c] for c in counts])
    chol = np.array([[sd0, 0.0], [r * sd1, math.sqrt(1.0 - r * r) * sd1]])
    return _Design(labels, codes, xrow, np.full(J, s), np.zeros(J), _real("intercept", intercept),
                   _real("slope", slope), chol)


def _draw(design: _Design, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A response and the truth (J x 2: intercept, slope) for one run of the study."""
    J = len(design.labels)
    b = rng.standard_normal((J, 2)) @ design.cov_factor.T
    truth = np.column_stack([design.intercept + design.shift + b[:, 0], design.slope + b[:, 1]])
    c = design.codes
    e = rng.standard_normal(c.size) * design.sigma_group[c]
    y = truth[c, 0] + truth[c, 1] * design.x + e
    return y, truth


def _frames(design: _Design, y, truth) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = np.asarray(design.labels, dtype=object)
    data = pd.DataFrame({"y": y, "x": design.x, "group": pd.Series(labels[design.codes], dtype=object)})
    t = pd.DataFrame(truth, columns=["intercept", "slope"],
                     index=pd.Index(list(design.labels), name="group"))
    return data, t


def simulate_groups(n_groups, n_per_group, *, x=None, intercept=0.0, slope=0.0, sd_intercept=1.0,
                    sd_slope=0.0, corr=0.0, sigma=1.0, sizes=None, seed=None):
    """Simulate grouped data from a random-intercept-and-slope model with the truth known.

    Parameters
    ----------
    n_groups : int
        Number of groups (at least 2).
    n_per_group : int
        Observations per group (at least 1); with ``sizes``, the most any group has.
    x : sequence of float, optional
        The ``n_per_group`` predictor values used in every group; default
        ``0, 1, ..., n_per_group - 1`` (like sleepstudy's Days).
    intercept, slope : float
        Fixed effects.
    sd_intercept, sd_slope : float
        SDs of the groups' random intercepts and slopes (``tau``).
    corr : float
        Their correlation, strictly between -1 and 1.
    sigma : float
        Residual SD (above 0).
    sizes : sequence of int, optional
        Per-group counts for unbalanced designs: group ``j`` takes the first ``sizes[j]``
        values of ``x``.
    seed : int or numpy.random.Generator, optional
        Reproduces the draw.

    Returns
    -------
    data : pandas.DataFrame
        Columns ``y``, ``x`` and ``group`` (text labels ``g01``, ``g02``, ... that sort in
        group order).
    truth : pandas.DataFrame
        Indexed by group label; columns ``intercept`` and ``slope``: the fixed value plus
        that group's random effect.

    Raises
    ------
    LmmError
        Fewer than 2 groups, no observations, a correlation outside (-1, 1), a negative
        SD, sigma 0, sizes that do not fit, or more than :data:`MAX_ROWS` rows.

    Notes
    -----
    ``(b0_j, b1_j) = L z_j`` with ``z_j`` standard normal and ``L`` the Cholesky factor of
    ``[[sd_intercept^2, corr sd_intercept sd_slope], [., sd_slope^2]]``; then
    ``y_ij = intercept + b0_j + (slope + b1_j) x_i + sigma e_ij``.  numpy's generator, so
    the same seed does not give R's numbers.
    """
    design = _design(n_groups, n_per_group, x, intercept, slope, sd_intercept, sd_slope, corr,
                     sigma, sizes)
    y, truth = _draw(design, np.random.default_rng(seed))
    return _frames(design, y, truth)


# --------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class Preset:
    """A teaching scenario: slider values, a twist on the plain model, and what to look for.

    ``settings`` are :func:`simulate_scenario` keywords (the page's sliders).  The twists:
    ``outlier`` moves the first group's intercept by that many random-intercept SDs (at
    least 3 residual SDs); ``simpson`` centres each group's x at a different place, with
    group intercepts falling by ``simpson`` per unit of that centre, so the between-group
    trend runs against the within-group slopes; ``sigma_ratio`` makes the second half of
    the groups that many times noisier than the first; ``random_x`` draws each row's x
    uniformly from 0 to ``random_x`` (rounded), instead of the same grid in every group.
    """

    title: str
    explanation: str
    settings: dict
    outlier: float = 0.0
    simpson: float = 0.0
    sigma_ratio: float = 1.0
    random_x: float = 0.0


DEFAULT_SETTINGS = dict(n_groups=20, n_per_group=10, imbalance=0.0, intercept=10.0, slope=1.0, sd_intercept=4.0,
             sd_slope=1.0, corr=0.0, sigma=4.0, centre_x=False)

PRESETS = {
    "outlier": Preset(
        "One outlier group",
        "The first group (g01) sits far above the others. Partial pooling pulls it toward the "
        "average, so for that one group partial pooling misses the truth by more than no pooling, "
        "while the other groups still gain. Compare g01's three markers with its truth (the star).",
        {**DEFAULT_SETTINGS, "n_groups": 12, "n_per_group": 8}, outlier=5.0),
    "simpson": Preset(
        "Simpson's paradox",
        "Within every group y rises with x, but the groups with larger x have lower intercepts, so "
        "across groups y falls. Complete pooling's single line gets the sign of the slope wrong; "
        "no and partial pooling follow the groups. Look at the slopes in the error table.",
        {**DEFAULT_SETTINGS, "n_groups": 8, "n_per_group": 8, "slope": 1.0, "sd_slope": 0.2, "sd_intercept": 2.0,
         "sigma": 1.5}, simpson=3.0),
    "singular": Preset(
        "A singular fit",
        "The groups barely differ (random-intercept SD 0.3 against a residual SD of 6). lmer estimates "
        "their spread as zero: a singular fit. Partial pooling then equals complete pooling: every "
        "arrow in the shrinkage plot ends at the same point, and lmer warns 'boundary (singular) fit'.",
        {**DEFAULT_SETTINGS, "n_groups": 10, "n_per_group": 6, "sd_intercept": 0.3, "sd_slope": 0.0, "sigma": 6.0}),
    "few_groups": Preset(
        "Few groups",
        "Only 3 groups: the mixed model must estimate how much groups vary from 3 values, so that SD "
        "is very uncertain and the amount of shrinkage is a guess. Most draws give a singular fit "
        "(lmer cannot tell the slopes' spread from 3 groups). Repeat the study and watch partial "
        "pooling's advantage shrink or vanish.",
        {**DEFAULT_SETTINGS, "n_groups": 3, "n_per_group": 10}),
    "mixture": Preset(
        "Two kinds of participants",
        "Half the groups are precise (residual SD 1.5) and half are noisy (residual SD 8), but the "
        "mixed model assumes one residual SD for everybody. 'Simulate from this fit' shows copies "
        "with the same noise in every group, unlike the data: the check that reveals the wrong "
        "assumption.",
        {**DEFAULT_SETTINGS, "n_groups": 12, "n_per_group": 10, "sigma": 1.5}, sigma_ratio=16 / 3),
    "imbalance": Preset(
        "Severe imbalance",
        "Most groups have only 1 or 2 observations; a few have all 10. No pooling cannot fit a line to "
        "a group of one, and its lines for groups of two are wild; partial pooling still estimates "
        "every group, shrinking the small ones strongly toward the average.",
        {**DEFAULT_SETTINGS, "n_groups": 20, "n_per_group": 10, "imbalance": 0.75}),
    "salaries": Preset(
        "Faculty salaries",
        "5 departments x 20 faculty: salary (in $1,000) by years of experience. Departments differ in "
        "starting salary and raises. With 20 people per department the three methods agree closely on "
        "the departments; pooling matters most where data are few.",
        {**DEFAULT_SETTINGS, "n_groups": 5, "n_per_group": 20, "intercept": 50.0, "slope": 1.5, "sd_intercept": 8.0,
         "sd_slope": 0.5, "corr": 0.3, "sigma": 6.0}, random_x=30.0),
}


def imbalanced_sizes(n_groups: int, n_per_group: int, imbalance: float, rng) -> np.ndarray:
    """Group sizes where a share ``imbalance`` of the groups (chosen at random) has only 1
    or 2 observations and the rest have ``n_per_group``."""
    share = _real("imbalance", imbalance)
    if not 0.0 <= share <= 1.0:
        raise LmmError(f"imbalance is a share of the groups, between 0 and 1 (got {share:g}).")
    sizes = np.full(n_groups, n_per_group)
    k = int(round(share * n_groups))
    if k:
        small = rng.choice(n_groups, size=k, replace=False)
        sizes[small] = np.minimum(rng.integers(1, 3, size=k), n_per_group)
    return sizes


def _scenario_design(settings: dict, preset: str | None, rng) -> _Design:
    s = {**DEFAULT_SETTINGS, **settings}
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise LmmError(f"unknown simulation setting(s): {', '.join(sorted(unknown))}; "
                       f"the settings are {', '.join(DEFAULT_SETTINGS)}.")
    p = None
    if preset is not None:
        if preset not in PRESETS:
            raise LmmError(f"unknown preset '{preset}'; the presets are {', '.join(PRESETS)}.")
        p = PRESETS[preset]
    J = _count("n_groups", s["n_groups"], 2, _TOO_FEW_GROUPS)
    n = _count("n_per_group", s["n_per_group"], 1, _TOO_FEW_ROWS)
    x = np.arange(n, dtype=float)
    if s["centre_x"]:
        x = x - x.mean()
    sizes = imbalanced_sizes(J, n, s["imbalance"], rng) if float(s["imbalance"]) > 0 else None
    d = _design(s["n_groups"], n, x, s["intercept"], s["slope"], s["sd_intercept"], s["sd_slope"],
                s["corr"], s["sigma"], sizes)
    if p is None:
        return d
    J = len(d.labels)
    xr, sig, shift = d.x, d.sigma_group.copy(), d.shift.copy()
    if p.random_x:
        xr = np.round(rng.uniform(0.0, p.random_x, size=d.x.size))
    if p.simpson:
        centres = np.linspace(0.0, 2.0 * max(1.0, float(np.ptp(d.x))), J)
        xr = xr + centres[d.codes]
        shift = shift - p.simpson * centres
    if p.outlier:
        tau, s0 = float(d.cov_factor[0, 0]), float(d.sigma_group[0])
        shift[0] += max(p.outlier * tau, 3.0 * s0)
    if p.sigma_ratio != 1.0:
        sig[J // 2:] *= p.sigma_ratio
    return replace(d, x=np.asarray(xr, float), sigma_group=sig, shift=shift)


def simulate_scenario(preset: str | None = None, *, seed=None, **settings):
    """Simulate the Simulate page's data: its sliders, imbalance and presets.

    Parameters
    ----------
    preset : str, optional
        A key of :data:`PRESETS`; its twist is applied to ``settings``.
    seed : int, optional
    **settings
        ``n_groups``, ``n_per_group``, ``imbalance`` (share of groups with only 1 or 2
        observations), ``intercept``, ``slope``, ``sd_intercept``, ``sd_slope``, ``corr``,
        ``sigma``, ``centre_x`` (x runs around 0 instead of from 0); missing ones take the
        defaults (:data:`DEFAULT_SETTINGS`): 20 groups x 10, intercept 10, slope 1,
        SDs 4 / 1, sigma 4.

    Returns
    -------
    data, truth
        As :func:`simulate_groups`.
    """
    rng = np.random.default_rng(seed)
    design = _scenario_design(settings, preset, rng)
    y, truth = _draw(design, rng)
    return _frames(design, y, truth)


# --------------------------------------------------------------------------- scoring

def _estimate_table(estimates) -> pd.DataFrame:
    """The long table (group, method, intercept, slope) of a ``PoolingEstimates``."""
    table = getattr(estimates, "table", None)
    need = {"group", "method", "intercept", "slope"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise LmmError("pooling_error needs the result of pooling_estimates() "
                       "(a PoolingEstimates with its table of group, method, intercept, slope).")
    return table


def pooling_error(estimates, truth: pd.DataFrame) -> pd.DataFrame:
    """Each pooling method's RMSE against the true group values.

    Parameters
    ----------
    estimates : PoolingEstimates
        The result of :func:`lmmcore.pooling_estimates` on the simulated data.
    truth : pandas.DataFrame
        From :func:`simulate_groups`: indexed by group label, columns ``intercept`` and
        ``slope``.

    Returns
    -------
    pandas.DataFrame
        Indexed by method (``complete``, ``no``, ``partial``); ``intercept`` and ``slope``
        hold ``sqrt(mean over groups of (estimate - truth)^2)``, ``n_groups`` how many
        groups had an intercept estimate.  A group without an estimate (no pooling of a
        group of one) is left out of that method's RMSE and counted, never filled in.
        A slope the model does not estimate is NaN.
    """
    table = _estimate_table(estimates)
    if not isinstance(truth, pd.DataFrame) or not {"intercept", "slope"} <= set(truth.columns):
        raise LmmError("truth must be the table simulate_groups() returns "
                       "(indexed by group, columns intercept and slope).")
    truth_index = pd.Index(truth.index.astype(str))
    true_values = truth[["intercept", "slope"]].to_numpy(dtype=float)
    groups = table["group"].astype(str).to_numpy()
    unknown = sorted(set(groups) - set(truth_index))
    if unknown:
        raise DataError(f"no truth for group(s) {', '.join(unknown[:5])}: "
                        "were the estimates made from these simulated data?")
    where = truth_index.get_indexer(groups)
    err = table[["intercept", "slope"]].to_numpy(dtype=float) - true_values[where]
    methods = table["method"].to_numpy()
    rows = {}
    for method in METHODS:
        e = err[methods == method]
        with np.errstate(invalid="ignore"):
            rmse = [math.sqrt(np.mean(col[np.isfinite(col)] ** 2)) if np.isfinite(col).any() else math.nan
                    for col in e.T]
        rows[method] = (rmse[0], rmse[1], int(np.isfinite(e[:, 0]).sum()))
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["intercept", "slope", "n_groups"])
    out.index.name = "method"
    return out


def known_variance_rmse(n_groups: int, n_per_group: int, sd_intercept: float, sigma: float) -> pd.Series:
    """RMSE of the group intercepts that theory gives when the variances are known.

    For balanced groups of ``n`` with x centred in each group and no random slope:
    no pooling (the group mean) ``sigma / sqrt(n)``; partial pooling (the posterior mean
    with ``tau`` and ``sigma`` known) ``(1/tau^2 + n/sigma^2)^(-1/2)``; complete pooling
    (the grand mean) ``sqrt(tau^2 (1 - 1/J) + sigma^2 / (n J))``.

    Returns
    -------
    pandas.Series
        Indexed ``complete``, ``no``, ``partial``.
    """
    J = _count("n_groups", n_groups, 2, _TOO_FEW_GROUPS)
    n = _count("n_per_group", n_per_group, 1, _TOO_FEW_ROWS)
    tau = _real("sd_intercept", sd_intercept, nonnegative=True)
    s = _real("sigma", sigma, nonnegative=True)
    partial = 0.0 if tau == 0 else (1.0 / tau ** 2 + n / s ** 2) ** -0.5
    return pd.Series({"complete": math.sqrt(tau ** 2 * (1 - 1 / J) + s ** 2 / (n * J)),
                      "no": s / math.sqrt(n), "partial": partial}, name="rmse")


def _line_estimates(fit, x, y, codes, m, random) -> dict:
    """Per group (intercept, slope) arrays of each method for one simulated response.

    The same three estimates as :func:`lmmcore.pooling_estimates` (complete pooling
    lm, closed-form no pooling, lmer's coef) on a design fitted already.
    """
    from lmmcore.pooling import _no_pooling

    X = np.column_stack([np.ones_like(x), x])
    cb = np.linalg.lstsq(X, y, rcond=None)[0]
    n_g = np.bincount(codes, minlength=m).astype(float)
    no_int, no_slope, _ = _no_pooling(x, y, codes, n_g, random, "x")
    coef = next(iter(fit.coef.values()))
    p_int = coef["(Intercept)"].to_numpy(float)
    p_slope = coef["x"].to_numpy(float)
    return {"complete": (np.full(m, cb[0]), np.full(m, cb[1])), "no": (no_int, no_slope),
            "partial": (p_int, p_slope)}


def repeat_pooling_error(n_reps: int = 200, *, preset: str | None = None, random: str = "intercept+slope",
                         seed=None, progress=None, **settings) -> pd.DataFrame:
    """Run the same simulated study ``n_reps`` times and score each pooling method each time.

    The design (groups, their sizes, x) is drawn once; every run draws new random
    effects and residuals, fits the three methods and computes :func:`pooling_error`.

    Parameters
    ----------
    n_reps : int
        Repetitions, 1 to :data:`MAX_REPETITIONS`.
    preset, **settings
        As :func:`simulate_scenario`.
    random : {"intercept+slope", "intercept"}
        What varies by group in the fitted models (as :func:`lmmcore.pooling_estimates`).
    seed : int, optional
    progress : callable, optional
        Called as ``progress(done, total)`` after each run.

    Returns
    -------
    pandas.DataFrame
        One row per run and method: ``rep``, ``method``, ``intercept``, ``slope`` (RMSE
        over groups), ``n_groups`` and ``singular`` (whether that run's lmer fit was).
    """
    from lmmcore.mixed import lmer

    reps = _count("n_reps", n_reps, 1, "run the study at least once.")
    if reps > MAX_REPETITIONS:
        raise LmmError(f"{reps:,} repetitions is more than the limit of {MAX_REPETITIONS:,}; "
                       "200 already show the spread of each method's error.")
    if random not in ("intercept+slope", "intercept"):
        raise LmmError("random must be 'intercept+slope' or 'intercept' for the simulation.")
    rng = np.random.default_rng(seed)
    design = _scenario_design(settings, preset, rng)
    m = len(design.labels)
    bar = "x" if random == "intercept+slope" else "1"
    formula = f"y ~ x + ({bar} | group)"
    rows = []
    base = None
    for r in range(reps):
        y, truth = _draw(design, rng)
        if base is None:
            data, _ = _frames(design, y, truth)
            base = lmer(formula, data, categorical=["group"], numeric=["y", "x"])
            fit = base
            # lme4 orders levels as text; the labels were made to sort in group order.
            if [str(v) for v in base.design.random_terms[0].levels] != list(design.labels):
                raise LmmError("internal: simulated group labels out of order")
        else:
            fit = base.refit(y)
        est = _line_estimates(fit, design.x, y, design.codes, m, random)
        for method in METHODS:
            ints, slopes = est[method]
            ok = np.isfinite(ints)
            e0 = ints[ok] - truth[ok, 0]
            e1 = slopes[ok] - truth[ok, 1]
            rows.append((r + 1, method, math.sqrt(np.mean(e0 ** 2)) if ok.any() else np.nan,
                         math.sqrt(np.mean(e1 ** 2)) if ok.any() else np.nan, int(ok.sum()),
                         bool(fit.is_singular)))
        if progress is not None:
            progress(r + 1, reps)
    return pd.DataFrame(rows, columns=["rep", "method", "intercept", "slope", "n_groups", "singular"])
