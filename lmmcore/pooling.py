"""Complete, no and partial pooling: three answers to "one line, or one per group?".

For a response, one numeric predictor and one grouping factor:

* complete pooling ignores the groups: one ``lm(response ~ predictor)``;
* no pooling fits each group on its own (an ``lm`` per group, or per-group intercepts /
  slopes beside a common slope / intercept);
* partial pooling is the mixed model's ``coef()``: each group's estimate pulled
  ("shrunk") toward the fixed effects, the more so the less data the group has and the
  further it lies from the average.

:func:`pooling_estimates` gives all three per group, :func:`shrinkage_sd` the spread of
the no- and partial-pooling estimates, and :func:`re_contours` the ellipses of the
fitted random-effects distribution that partial pooling shrinks toward.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.errors import DataError, LmmError
from lmmcore.formula import quote_name

RANDOM_CHOICES = ("intercept+slope", "intercept", "slope")
METHODS = ("complete", "no", "partial")


def pooling_formulas(response: str, predictor: str | None, group: str,
                     random: str = "intercept+slope") -> dict:
    """The lm (complete pooling) and lmer (partial pooling) formulas used for the estimates.

    Returns
    -------
    dict
        ``{"complete": "Reaction ~ Days", "partial": "Reaction ~ Days + (Days | Subject)"}``.
        With ``predictor=None``: ``"y ~ 1"`` and ``"y ~ 1 + (1 | g)"``.
    """
    random = _check_random(random, predictor)
    y, g = quote_name(response), quote_name(group)
    if predictor is None:
        return {"complete": f"{y} ~ 1", "partial": f"{y} ~ 1 + (1 | {g})"}
    x = quote_name(predictor)
    bar = {"intercept+slope": x, "intercept": "1", "slope": f"0 + {x}"}[random]
    return {"complete": f"{y} ~ {x}", "partial": f"{y} ~ {x} + ({bar} | {g})"}


def _check_random(random: str, predictor) -> str:
    random = str(random).replace(" ", "").lower()
    if random not in RANDOM_CHOICES:
        raise LmmError(f"random must be one of {', '.join(RANDOM_CHOICES)} (got '{random}').")
    if predictor is None:
        if random == "slope":
            raise LmmError("a random slope needs a predictor: choose a numeric predictor column.")
        return "intercept"
    return random


def pooling_estimates(data: pd.DataFrame, response: str, predictor: str | None, group: str,
                      random: str = "intercept+slope") -> pd.DataFrame:
    """Each group's intercept and slope under complete, no and partial pooling.

    Parameters
    ----------
    data : pandas.DataFrame
    response : str
        Numeric response column.
    predictor : str or None
        Numeric predictor column; None for intercept-only models (then the estimates
        are the grand mean, the group means and the mixed model's group intercepts, and
        ``slope`` is NaN).
    group : str
        Grouping column (treated as categorical).
    random : {"intercept+slope", "intercept", "slope"}
        Which coefficients vary by group in the partial- and no-pooling models.

    Returns
    -------
    pandas.DataFrame
        Columns ``group`` (level label, lme4's order), ``method`` ("complete", "no",
        "partial"), ``intercept``, ``slope``, ``n`` (the group's observations used) and
        ``note`` (why a no-pooling estimate is missing, in plain words; else "").  One
        row per group per method.  ``attrs``: ``formulas`` (see
        :func:`pooling_formulas`), ``fixef`` ({"intercept", "slope"} of the mixed model),
        ``response``, ``predictor``, ``group``, ``random``.

    Raises
    ------
    LmmError
        Unknown columns, non-numeric response or predictor, or a mixed model that
        cannot be fitted (e.g. one observation per group).

    Notes
    -----
    No pooling, by ``random``:

    * ``"intercept+slope"``: ``lm(response ~ predictor)`` in each group separately;
    * ``"intercept"``: ``lm(response ~ 0 + group + predictor)``: group intercepts, one
      common slope (the pooled within-group slope);
    * ``"slope"``: ``lm(response ~ predictor:group)``: one common intercept, group slopes.

    These least-squares fits are computed in closed form from per-group sums (no loop
    of model fits).  A group whose data cannot give an estimate (one observation, or no
    variation in the predictor) gets NaN, never 0.  Partial pooling is ``coef()`` of
    ``lmer(response ~ predictor + (... | group))`` (REML), complete pooling ``lm``; rows
    with a missing value in any of the three columns are left out of all three.
    """
    from lmmcore.linear import lm
    from lmmcore.mixed import lmer

    if not isinstance(data, pd.DataFrame):
        raise DataError("pooling_estimates needs a table (pandas DataFrame).")
    random = _check_random(random, predictor)
    cols = [response, group] + ([predictor] if predictor is not None else [])
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise DataError(f"no column {', '.join(repr(c) for c in missing)} in the data; "
                        f"columns are: {', '.join(map(str, data.columns[:25]))}.")
    if len(set(cols)) < len(cols):
        raise DataError("response, predictor and group must be three different columns.")
    d = data[cols].dropna().reset_index(drop=True)
    formulas = pooling_formulas(response, predictor, group, random)
    numeric = [c for c in (response, predictor) if c is not None]
    fit = lmer(formulas["partial"], d, categorical=[group], numeric=numeric)
    design = fit.design
    term = design.random_terms[0]
    levels = [str(lv) for lv in term.levels]
    codes = np.asarray(term.codes)
    m = len(levels)
    y = np.asarray(design.y, dtype=float)
    n_g = np.bincount(codes, minlength=m).astype(float)

    complete = lm(formulas["complete"], d, categorical=[group], numeric=numeric)
    cb = complete.fixef.to_numpy()
    c_int = float(cb[0])
    c_slope = float(cb[1]) if predictor is not None else np.nan

    coef = next(iter(fit.coef.values())).copy()
    coef.index = [str(i) for i in coef.index]
    coef = coef.reindex(levels)
    fixed_names = list(design.fixed_names)
    slope_name = fixed_names[1] if predictor is not None and len(fixed_names) > 1 else None
    p_int = coef["(Intercept)"].to_numpy(dtype=float)
    p_slope = coef[slope_name].to_numpy(dtype=float) if slope_name else np.full(m, np.nan)

    notes = np.array([""] * m, dtype=object)
    if predictor is None:
        no_int = np.bincount(codes, weights=y, minlength=m) / n_g
        no_slope = np.full(m, np.nan)
    else:
        x = np.asarray(design.X[:, 1], dtype=float)
        no_int, no_slope, notes = _no_pooling(x, y, codes, n_g, random, predictor)

    n_int = n_g.astype(int)
    blocks = []
    for method, ints, slopes, note in (
        ("complete", np.full(m, c_int), np.full(m, c_slope), [""] * m),
        ("no", no_int, no_slope, notes),
        ("partial", p_int, p_slope, [""] * m),
    ):
        blocks.append(pd.DataFrame({
            "group": pd.Series(levels, dtype="str"), "method": method,
            "intercept": np.asarray(ints, dtype=float), "slope": np.asarray(slopes, dtype=float),
            "n": n_int, "note": pd.Series(list(note), dtype="str"),
        }))
    out = pd.concat(blocks, ignore_index=True)
    fe = fit.fixef
    out.attrs.update(
        formulas=formulas, response=response, predictor=predictor, group=group, random=random,
        fixef={"intercept": float(fe.get("(Intercept)", np.nan)),
               "slope": float(fe[slope_name]) if slope_name else float("nan")},
    )
    return out


def _no_pooling(x, y, codes, n_g, random, predictor):
    """Closed-form least squares per group (see :func:`pooling_estimates`, Notes)."""
    m = len(n_g)
    bc = lambda w: np.bincount(codes, weights=w, minlength=m)  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        xbar = bc(x) / n_g
        ybar = bc(y) / n_g
        dx = x - xbar[codes]
        dy = y - ybar[codes]
        cxx = bc(dx * dx)
        cxy = bc(dx * dy)
        sxx = bc(x * x)
    # Predictor constant within the group (relative to its size): no slope there.
    flat = cxx <= 1e-12 * np.maximum(sxx, np.finfo(float).tiny)
    notes = np.array([""] * m, dtype=object)
    if random == "intercept+slope":
        ok = (n_g >= 2) & ~flat
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(ok, cxy / cxx, np.nan)
            intercept = np.where(ok, ybar - slope * xbar, np.nan)
        for j in range(m):
            if n_g[j] < 2:
                notes[j] = "only 1 observation: no line can be fitted"
            elif flat[j]:
                notes[j] = (f"all {int(n_g[j])} observations have the same {predictor} value: "
                            "no line can be fitted")
        return intercept, slope, notes
    if random == "intercept":
        total_cxx = cxx[~flat].sum()
        if total_cxx <= 1e-12 * max(sxx.sum(), np.finfo(float).tiny):
            notes[:] = (f"{predictor} does not vary within any group: the common slope of the "
                        "no-pooling model cannot be estimated")
            return np.full(m, np.nan), np.full(m, np.nan), notes
        b = cxy[~flat].sum() / total_cxx
        return ybar - b * xbar, np.full(m, b), notes
    # random == "slope": y = a + b_g x, one intercept a (normal equations solved for a).
    sx, sxy = bc(x), bc(x * y)
    zero = sxx <= np.finfo(float).tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_x = np.where(zero, 0.0, sx / sxx)
        denom = len(y) - np.sum(ratio_x * sx)
        if denom <= 1e-10 * len(y):
            notes[:] = (f"{predictor} does not vary within any group: the common intercept of "
                        "the no-pooling model cannot be estimated")
            return np.full(m, np.nan), np.full(m, np.nan), notes
        a = (y.sum() - np.sum(ratio_x * sxy)) / denom
        slope = np.where(zero, np.nan, (sxy - a * sx) / sxx)
    for j in np.flatnonzero(zero):
        notes[j] = (f"all observations at {predictor} = 0: no slope through the common "
                    "intercept can be estimated")
    return np.full(m, a), slope, notes


def shrinkage_sd(estimates: pd.DataFrame) -> pd.DataFrame:
    """Spread across groups of the no- and partial-pooling estimates.

    Parameters
    ----------
    estimates : pandas.DataFrame
        The result of :func:`pooling_estimates`.

    Returns
    -------
    pandas.DataFrame
        Index ``"no"``, ``"partial"``; columns ``intercept``, ``slope``: the standard
        deviation (``ddof=1``, missing estimates skipped) of each method's estimates.
        Partial pooling's is smaller: that is the shrinkage.
    """
    need = {"method", "intercept", "slope"}
    if not isinstance(estimates, pd.DataFrame) or not need <= set(estimates.columns):
        raise LmmError("shrinkage_sd needs the table from pooling_estimates() "
                       "(columns method, intercept, slope).")
    rows = {}
    for method in ("no", "partial"):
        sub = estimates.loc[estimates["method"] == method, ["intercept", "slope"]]
        sd = sub.astype(float).std(ddof=1, skipna=True)
        # A coefficient shared by all groups (e.g. the common slope) has SD 0, not 1e-15.
        scale = sub.astype(float).abs().max().fillna(0.0).clip(lower=1.0)
        rows[method] = sd.where(~(sd <= 1e-12 * scale), 0.0)
    return pd.DataFrame(rows).T.loc[["no", "partial"], ["intercept", "slope"]]


def re_contours(fit, group: str, levels=(0.1, 0.3, 0.5, 0.7, 0.9), n_points: int = 100) -> pd.DataFrame:
    """Contour ellipses of one group's fitted bivariate normal random effects.

    Parameters
    ----------
    fit : MixedFit
        A mixed model with a random intercept and one random slope for ``group``.
    group : str
        Grouping factor name as lme4 names it (e.g. ``"Subject"``).
    levels : sequence of float in (0, 1)
        Probability each ellipse contains.
    n_points : int
        Points per ellipse; the first and last coincide (a closed curve).

    Returns
    -------
    pandas.DataFrame
        Columns ``level``, ``intercept``, ``slope``: ``n_points`` rows per level.
        ``attrs["center"]`` is the fixed effects (intercept, slope) the ellipses are
        centred at; ``attrs["terms"]`` the two coefficient names.

    Raises
    ------
    LmmError
        The group does not have exactly an intercept and one slope, or a level is not
        strictly between 0 and 1.

    Notes
    -----
    The random effects ``b ~ N(0, Sigma)`` with ``Sigma = fit.re_cov(group)``; a group's
    coefficients are ``beta + b``.  The ellipse of level ``p`` is
    ``{c : (c - beta)' Sigma^-1 (c - beta) = chi2_2^-1(p)}``, the region of a bivariate
    normal holding probability ``p``, traced as ``beta + r V diag(sqrt(lambda)) (cos t, sin t)``
    from the eigen-decomposition ``Sigma = V diag(lambda) V'`` (which also draws the
    degenerate ellipse of a singular fit as a line segment).
    """
    if not hasattr(fit, "re_cov"):
        raise LmmError("re_contours needs a mixed model fitted with lmer().")
    cov = fit.re_cov(group)
    terms = list(cov.columns)
    if len(terms) != 2 or "(Intercept)" not in terms:
        raise LmmError(
            f"the contour plot needs a random intercept and one random slope for '{group}', "
            f"but its random effects are: {', '.join(terms)}. Fit e.g. (x | {group})."
        )
    slope_term = terms[1] if terms[0] == "(Intercept)" else terms[0]
    order = ["(Intercept)", slope_term]
    sigma = cov.loc[order, order].to_numpy(dtype=float)
    fe = fit.fixef
    center = np.array([float(fe.get("(Intercept)", 0.0)), float(fe.get(slope_term, 0.0))])
    levels = [float(p) for p in levels]
    if any(not (0.0 < p < 1.0) for p in levels):
        raise LmmError("contour levels must be probabilities strictly between 0 and 1.")
    if n_points < 3:
        raise LmmError("n_points must be at least 3.")
    lam, vec = np.linalg.eigh((sigma + sigma.T) / 2.0)
    half_axes = vec * np.sqrt(np.clip(lam, 0.0, None))
    t = np.linspace(0.0, 2.0 * np.pi, int(n_points))
    circle = np.vstack([np.cos(t), np.sin(t)])
    frames = []
    for p in levels:
        r = np.sqrt(stats.chi2.ppf(p, 2))
        pts = center[:, None] + r * (half_axes @ circle)
        frames.append(pd.DataFrame({"level": p, "intercept": pts[0], "slope": pts[1]}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["center"] = {"intercept": center[0], "slope": center[1]}
    out.attrs["terms"] = order
    return out
