"""Cross-validation of complete, no and partial pooling: which predicts held-out data best?

:func:`cross_validate` splits the data, fits the three models of
:func:`lmmcore.pooling_estimates` on each training part and scores their predictions of
the held-out part by RMSE.  The models are R's:

* complete pooling ``lm(y ~ x)``;
* no pooling ``lm(y ~ x * g)`` (``y ~ x + g`` for a random intercept only);
* partial pooling ``lmer(y ~ x + (x | g))`` (or ``(1 | g)``), REML, predicted with
  ``allow.new.levels = TRUE`` (a group absent from training gets the population line).

The schemes ask different questions (:data:`SCHEME_QUESTIONS`): ``loo``, ``kfold`` and
``mc`` predict a new observation of a known group; ``forecast`` predicts each group's
last x from its earlier ones; ``group`` predicts a new group (complete pooling against
partial pooling's population line).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lmmcore.errors import DataError, LmmError

__all__ = ["cross_validate", "SCHEMES", "SCHEME_QUESTIONS", "MAX_SPLITS"]

SCHEMES = ("loo", "kfold", "mc", "forecast", "group")
#: What each scheme asks, in a sentence a student can read.
SCHEME_QUESTIONS = {
    "loo": "Leave one out: how well does each method predict a new observation of a group it "
           "already knows? (every row held out once)",
    "kfold": "k-fold: the same question as leave-one-out (a new observation of a known group), "
             "holding out a tenth (1/k) of the rows at a time.",
    "mc": "Repeated random splits: a new observation of a known group, averaged over many random "
          "train/test splits of the rows.",
    "forecast": "Forecast: predict each group's last value of the predictor from its earlier ones "
                "(the next day of a known subject).",
    "group": "Leave one group out: how well does each method predict a new group it has never seen? "
             "(no pooling has nothing to say about a new group; partial pooling uses its population line)",
}
#: The most train/test splits one call fits (each split fits an lmer).
MAX_SPLITS = 2000
METHODS = ("complete", "no", "partial")


def _splits(scheme, n, x, codes, m, k, test_fraction, repeats, rng) -> list:
    """The held-out row indices of every split."""
    if scheme == "loo":
        return [np.array([i]) for i in range(n)]
    if scheme == "kfold":
        try:
            kk = int(k)
        except (TypeError, ValueError):
            kk = -1
        if kk != k or not 2 <= kk <= n:
            raise LmmError(f"k (the number of folds) must be a whole number from 2 to the number of "
                           f"rows ({n}); got {k!r}.")
        order = rng.permutation(n)
        return [np.sort(f) for f in np.array_split(order, kk)]
    if scheme == "mc":
        try:
            frac = float(test_fraction)
            reps = int(repeats)
        except (TypeError, ValueError):
            raise LmmError("test_fraction must be a number and repeats a whole number.") from None
        if not 0.0 < frac < 1.0:
            raise LmmError(f"test_fraction is the share of rows held out, strictly between 0 and 1 "
                           f"(got {test_fraction!r}).")
        if reps != repeats or reps < 1:
            raise LmmError(f"repeats must be a whole number of at least 1 (got {repeats!r}).")
        if reps > MAX_SPLITS:
            raise LmmError(f"{reps:,} random splits is more than the limit of {MAX_SPLITS:,}.")
        size = min(n - 1, max(1, int(round(frac * n))))
        return [np.sort(rng.choice(n, size=size, replace=False)) for _ in range(reps)]
    if scheme == "forecast":
        last = x == x.max()
        if last.all():
            raise LmmError("Every row has the same predictor value, so there is nothing earlier to "
                           "forecast from.")
        return [np.flatnonzero(last)]
    # group
    return [np.flatnonzero(codes == j) for j in range(m)]


def _partial(fit_all, train, test, population_only: bool) -> np.ndarray:
    """Partial pooling's predictions for the test rows from the lmer fitted to the training rows.

    ``fit_all.refit_subset`` is lme4's fit on the training rows (pre-fit checks, REML
    criterion minimised over theta, then beta and the conditional modes), started from
    the optimum on all rows: a training set differs from all rows by a few rows, so its
    optimum is near and the optimiser needs few steps.  A group with no training rows
    gets the population prediction (lme4's ``allow.new.levels = TRUE``).  The test rows'
    model matrices are taken from ``fit_all``'s design (as ``predict(newdata)`` would
    encode them, without encoding a table once per split).
    """
    sub = fit_all.refit_subset(train)
    full = fit_all.design
    X_test = np.asarray(full.X, float)[test]
    if population_only:
        return sub.linear_predictor(X_test)
    groups = []
    for t_all, t_sub in zip(full.random_terms, sub.design.random_terms):
        position = {level: i for i, level in enumerate(t_sub.levels)}
        code_map = np.array([position.get(level, -1) for level in t_all.levels], np.intp)
        groups.append((code_map[np.asarray(t_all.codes, np.intp)[test]],
                       np.asarray(t_all.Z_raw, float)[test]))
    return sub.linear_predictor(X_test, groups)


def _complete(x, y, train, test) -> np.ndarray:
    X = np.column_stack([np.ones(train.size), x[train]])
    b = np.linalg.lstsq(X, y[train], rcond=None)[0]
    return b[0] + b[1] * x[test]


def _no_pooling(x, y, codes, labels, train, test, random) -> np.ndarray:
    """Predictions of ``lm(y ~ x * g)`` / ``lm(y ~ x + g)`` fitted on the training rows.

    A group absent from training gets NaN.  When every training group can have its own
    line the fit is the closed form of :func:`lmmcore.pooling_estimates`; otherwise (a
    group left with one row, or one x value) R's ``lm`` drops that group's aliased
    slope column, which changes what it predicts there, so that split is fitted with
    :func:`lmmcore.lm`, which drops columns by R's pivoting rule.
    """
    from lmmcore.pooling import _no_pooling as closed_form

    m = len(labels)
    ct, xt, yt = codes[train], x[train], y[train]
    n_g = np.bincount(ct, minlength=m).astype(float)
    ints, slopes, _ = closed_form(xt, yt, ct, n_g, random, "x")
    g = codes[test]
    seen = n_g[g] > 0
    if np.all(np.isfinite(ints[n_g > 0])):
        pred = ints[g] + slopes[g] * x[test]
    else:
        from lmmcore.linear import lm

        lab = np.asarray(labels, dtype=object)
        frame = pd.DataFrame({"y": yt, "x": xt, "g": lab[ct]})
        fit = lm("y ~ x * g" if random == "intercept+slope" else "y ~ x + g", frame,
                 categorical=["g"], numeric=["y", "x"])
        pred = np.full(test.size, np.nan)
        if seen.any():
            new = pd.DataFrame({"y": y[test][seen], "x": x[test][seen], "g": lab[g[seen]]})
            pred[seen] = fit.predict(new).to_numpy()
    pred[~seen] = np.nan
    return pred


def cross_validate(data: pd.DataFrame, response: str, predictor: str, group: str,
                   random: str = "intercept+slope", scheme: str = "loo", k: int = 10,
                   test_fraction: float = 0.2, repeats: int = 50, seed=None, progress=None) -> pd.DataFrame:
    """Prediction error of complete, no and partial pooling on held-out rows.

    Parameters
    ----------
    data : pandas.DataFrame
    response, predictor : str
        Numeric columns (the response and one predictor).
    group : str
        Grouping column (treated as categorical).
    random : {"intercept+slope", "intercept"}
        What varies by group in the no- and partial-pooling models.
    scheme : {"loo", "kfold", "mc", "forecast", "group"}
        Leave one row out; ``k`` folds; ``repeats`` random splits holding out
        ``test_fraction`` of the rows; train on ``x < max(x)`` and predict ``x == max(x)``;
        leave one group out.
    k, test_fraction, repeats
        As above.
    seed : int, optional
        Reproduces the folds and random splits (numpy's generator).
    progress : callable, optional
        Called as ``progress(done, total)`` after each split.

    Returns
    -------
    pandas.DataFrame
        Indexed by method (``complete``, ``no``, ``partial``; the ``group`` scheme has no
        ``no``); ``rmse`` over every prediction the method could make, and ``n``, how
        many that was.  ``attrs``: ``scheme``, ``splits``, ``question``.

    Raises
    ------
    LmmError
        Unknown columns or scheme, non-numeric columns, fewer than 2 groups, bad ``k`` /
        ``test_fraction`` / ``repeats``, more than :data:`MAX_SPLITS` splits, or a
        training set an lmer cannot be fitted to.

    Notes
    -----
    Every method sees the same splits.  A group absent from a training set gets the
    population prediction from partial pooling and no prediction from no pooling (not
    counted in its ``n``).  Rows with a missing value in the three columns are dropped
    first.  The lmer on each training set is fitted from the design built once on all
    rows (the rows kept, unused levels dropped), which is what ``lmer`` on those rows
    would build, and its optimiser starts at the optimum on all rows (lme4 starts each
    fit afresh; both stop within the optimiser's tolerance of the same optimum).
    """
    from lmmcore.design import build_design
    from lmmcore.pooling import pooling_formulas

    if not isinstance(data, pd.DataFrame):
        raise DataError("cross_validate needs a table (pandas DataFrame).")
    if scheme not in SCHEMES:
        raise LmmError(f"unknown scheme '{scheme}'; choose one of {', '.join(SCHEMES)}.")
    if random not in ("intercept+slope", "intercept"):
        raise LmmError("random must be 'intercept+slope' or 'intercept' for cross-validation.")
    cols = [response, predictor, group]
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise DataError(f"no column {', '.join(repr(c) for c in missing)} in the data; "
                        f"columns are: {', '.join(map(str, data.columns[:25]))}.")
    if len(set(cols)) < 3:
        raise DataError("response, predictor and group must be three different columns.")
    d = data[cols].dropna().reset_index(drop=True)
    for c in (response, predictor):
        if not pd.api.types.is_numeric_dtype(d[c]) or pd.api.types.is_bool_dtype(d[c]):
            raise DataError(f"'{c}' must be numeric for cross-validation.")
    if len(d) < 3:
        raise DataError(f"only {len(d)} complete rows: cross-validation needs more data.")
    formula = pooling_formulas(response, predictor, group, random)["partial"]
    design = build_design(formula, d, categorical=[group], numeric=[response, predictor])
    term = design.random_terms[0]
    codes = np.asarray(term.codes)
    m = term.n_levels  # build_design has checked there are at least 2 groups
    y = np.asarray(design.y, float)
    x = np.asarray(d[predictor], float)[np.asarray(design.row_index)]
    rng = np.random.default_rng(seed)
    splits = _splits(scheme, len(y), x, codes, m, k, test_fraction, repeats, rng)
    if len(splits) > MAX_SPLITS:
        raise LmmError(f"{scheme} would fit {len(splits):,} models; the limit is {MAX_SPLITS:,}. "
                       "Use k-fold or random splits on a table this large.")
    from lmmcore.mixed import fit_design

    fit_all = fit_design(design)  # the optimum on all rows: every split starts there
    group_scheme = scheme == "group"
    methods = ("complete", "partial") if group_scheme else METHODS
    errors = {mth: [] for mth in methods}
    everything = np.arange(len(y))
    for i, test in enumerate(splits):
        train = np.setdiff1d(everything, test, assume_unique=True)
        obs = y[test]
        errors["complete"].append(obs - _complete(x, y, train, test))
        if not group_scheme:
            errors["no"].append(obs - _no_pooling(x, y, codes, term.levels, train, test, random))
        try:
            errors["partial"].append(obs - _partial(fit_all, train, test, group_scheme))
        except LmmError as exc:
            raise LmmError(f"split {i + 1} of {len(splits)}: the mixed model could not be fitted "
                           f"to the training rows ({exc})") from None
        if progress is not None:
            progress(i + 1, len(splits))
    rows = {}
    for mth, parts in errors.items():
        e = np.concatenate(parts)
        ok = np.isfinite(e)
        rows[mth] = {"rmse": math.sqrt(float(np.mean(e[ok] ** 2))) if ok.any() else float("nan"),
                     "n": int(ok.sum())}
    out = pd.DataFrame(rows).T
    out["n"] = out["n"].astype(int)
    out["rmse"] = out["rmse"].astype(float)
    out.index.name = "method"
    out.attrs.update(scheme=scheme, splits=len(splits), question=SCHEME_QUESTIONS[scheme])
    return out
