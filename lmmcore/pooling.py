"""Complete, no and partial pooling: three answers to "one line, or one per group?".

For a response, one numeric predictor and one grouping factor:

* complete pooling ignores the groups: one ``lm(response ~ predictor)``;
* no pooling fits each group on its own (an ``lm`` per group, or per-group intercepts /
  slopes beside a common slope / intercept);
* partial pooling is the mixed model's ``coef()``: each group's estimate pulled
  ("shrunk") toward the fixed effects, the more so the less data the group has and the
  further it lies from the average.

:func:`pooling_estimates` fits all three and returns one :class:`PoolingEstimates`: the
mixed fit, each method's formula, the per-group table, the group sizes and how far each
group shrank.  Everything the pages show about pooling is read from that object;
:func:`shrinkage_sd` gives the spread of the no- and partial-pooling estimates and
:func:`re_contours` the ellipses of the fitted random-effects distribution that partial
pooling shrinks toward.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.errors import DataError, LmmError
from lmmcore.formula import quote_name
from lmmcore.formula_menu import compose_formula

__all__ = ["PoolingEstimates", "pooling_estimates", "pooling_formulas", "shrinkage_sd", "re_contours",
           "RANDOM_CHOICES", "METHODS", "COEFFICIENTS"]

# The kinds of random part (lmmcore.formula_menu.RANDOM_KINDS, one vocabulary) the pooling
# comparison offers, in the order its menu lists them.
RANDOM_CHOICES = ("intercept+slope", "intercept", "slope")
METHODS = ("complete", "no", "partial")
COEFFICIENTS = ("intercept", "slope")
# Which coefficients differ between groups, for each kind of random part.
_VARYING = {"intercept+slope": ("intercept", "slope"), "intercept": ("intercept",), "slope": ("slope",)}
_TABLE_COLUMNS = ["group", "method", *COEFFICIENTS, "n", "note"]


class PoolingEstimates:
    """Each group's coefficients under several pooling methods, with what they came from.

    Made by :func:`pooling_estimates`; read-only (and picklable).  Consumers read it and
    never refit: it carries the mixed model that gave partial pooling.

    Attributes
    ----------
    response, group : str
        The response and grouping columns.
    predictor : str or None
        The numeric predictor; None for an intercept-only comparison.
    random : str
        Which coefficients vary by group: one of :data:`RANDOM_CHOICES` (the
        vocabulary of ``lmmcore.formula_menu.RANDOM_KINDS``).
    fit : MixedFit
        The partial-pooling mixed model (lme4's ``lmer``, REML).
    table : pandas.DataFrame
        The long table, one row per group per method: ``group`` (level label, lme4's
        order), ``method``, ``intercept``, ``slope`` (NaN without a predictor), ``n`` (the
        group's observations used) and ``note`` (why an estimate is missing, in plain
        words; else "").  A copy each time: changing it changes nothing here.
    formulas : dict
        Method -> the model formula whose coefficients are that method's estimates.

    Notes
    -----
    The table is generic in its methods (rows) and coefficients (columns): the lookups
    here (:meth:`method`, :meth:`wide`, :attr:`n`, :attr:`shrinkage`...) work for any
    set of methods, so another model family (estimates on its link scale) or a simulated
    truth can be added as methods of the same table.
    """

    _frozen = False

    def __init__(self, *, table: pd.DataFrame, fit, formulas: dict, response: str,
                 predictor: str | None, group: str, random: str):
        missing = [c for c in _TABLE_COLUMNS if c not in table.columns]
        if missing:
            raise LmmError(f"a pooling table needs the columns {', '.join(_TABLE_COLUMNS)}; "
                           f"missing: {', '.join(missing)}.")
        if random not in _VARYING:
            raise LmmError(f"random must be one of {', '.join(RANDOM_CHOICES)} (got '{random}').")
        self._table = table.reset_index(drop=True).copy()
        self._formulas = dict(formulas)
        self.fit = fit
        self.response = response
        self.predictor = predictor
        self.group = group
        self.random = random
        self._frozen = True

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError("PoolingEstimates is read-only; call pooling_estimates() again")
        object.__setattr__(self, name, value)

    def __reduce__(self):
        return (_rebuild_estimates, (type(self), self._state()))

    def _state(self) -> dict:
        return {"table": self._table, "fit": self.fit, "formulas": self._formulas,
                "response": self.response, "predictor": self.predictor, "group": self.group,
                "random": self.random}

    def __repr__(self):
        return (f"<PoolingEstimates {self._formulas.get('partial', '')!r}: "
                f"{len(self.groups)} groups, methods {', '.join(self.methods)}>")

    # -- what it was computed from ------------------------------------------------------
    @property
    def table(self) -> pd.DataFrame:
        # A shallow copy: pandas' copy-on-write copies the data only if the copy is written to.
        return self._table.copy(deep=False)

    @property
    def formulas(self) -> dict:
        return dict(self._formulas)

    def replace(self, **changes) -> "PoolingEstimates":
        """A copy with some fields replaced (``table``, ``fit``, ...), as ``dataclasses.replace``:
        e.g. partial pooling at another theta (``lmmcore.fitview.estimates_at``)."""
        state = self._state()
        unknown = sorted(set(changes) - set(state))
        if unknown:
            raise LmmError(f"PoolingEstimates has no field {', '.join(unknown)}; "
                           f"its fields are {', '.join(state)}.")
        return type(self)(**{**state, **changes})

    @property
    def methods(self) -> tuple:
        """The methods in the table, in its order (``("complete", "no", "partial")``)."""
        return tuple(dict.fromkeys(self._table["method"]))

    @property
    def coefficients(self) -> tuple:
        """The coefficients estimated: ``("intercept", "slope")``, or ``("intercept",)``
        without a predictor."""
        return COEFFICIENTS if self.predictor is not None else COEFFICIENTS[:1]

    @property
    def varying(self) -> tuple:
        """The coefficients that differ between groups (the random part's)."""
        return _VARYING[self.random]

    @property
    def fixef(self) -> pd.Series:
        """The mixed model's fixed effects, indexed ``intercept``, ``slope`` (NaN without
        a predictor): the average that partial pooling shrinks toward."""
        fe = self.fit.fixef
        names = list(self.fit.design.fixed_names)
        slope = float(fe[names[1]]) if self.predictor is not None and len(names) > 1 else math.nan
        return pd.Series({"intercept": float(fe.get("(Intercept)", math.nan)), "slope": slope},
                         name="fixef")

    # -- per group ------------------------------------------------------------------------
    @property
    def groups(self) -> list:
        """Group labels in lme4's order."""
        return list(dict.fromkeys(self._table["group"]))

    @property
    def n(self) -> pd.Series:
        """Observations per group, indexed by group."""
        first = self._table.drop_duplicates("group")
        return pd.Series(first["n"].to_numpy(dtype=int), index=pd.Index(first["group"], name="group"),
                         name="n")

    def method(self, name: str) -> pd.DataFrame:
        """One method's rows, indexed by group: coefficients, ``n`` and ``note``."""
        rows = self._table[self._table["method"] == name]
        if rows.empty and name not in self.methods:
            raise LmmError(f"no method {name!r} in the estimates; they hold {', '.join(self.methods)}.")
        return rows.drop(columns="method").set_index("group")

    def wide(self) -> pd.DataFrame:
        """One row per group: ``n``, then each coefficient under each method, as
        ``"intercept (complete)"``, ``"intercept (no)"``, ... ``"slope (partial)"``."""
        groups = pd.Index(self.groups, name="group")
        out = pd.DataFrame({"n": self.n.reindex(groups).to_numpy()}, index=groups)
        by = {m: self.method(m) for m in self.methods}
        for coef in self.coefficients:
            for m, rows in by.items():
                out[f"{coef} ({m})"] = rows[coef].reindex(groups).to_numpy(dtype=float)
        return out

    @property
    def own_estimate(self) -> pd.Series:
        """Whether each group's data give its own (no-pooling) estimate of every varying
        coefficient: False for a group too small, or without variation in the predictor."""
        no = self.method("no").reindex(self.groups)
        own = np.isfinite(no[list(self.varying)].to_numpy(dtype=float)).all(axis=1)
        return pd.Series(own, index=pd.Index(self.groups, name="group"), name="own_estimate")

    @property
    def notes(self) -> pd.Series:
        """Why an estimate is missing, indexed by group (only the groups with a note)."""
        t = self._table
        rows = t[t["note"].fillna("").astype(str) != ""].drop_duplicates(["group", "note"])
        return pd.Series(rows["note"].astype(str).to_numpy(), index=pd.Index(rows["group"], name="group"),
                         name="note")

    @property
    def shrinkage(self) -> pd.Series:
        """How far each group's estimate moves from no to partial pooling.

        Returns
        -------
        pandas.Series
            Indexed by group; NaN for a group without its own estimate (see
            :attr:`own_estimate`), whose estimate comes from the other groups alone.

        Notes
        -----
        The distance between the group's no-pooling and partial-pooling coefficients,
        each varying coefficient ``k`` (see :attr:`varying`) measured in ``s_k``, the
        standard deviation (``ddof=1``) of the no-pooling estimates across groups::

            shrinkage_g = sqrt( sum_k ((partial_gk - no_gk) / s_k)^2 )

        Intercept and slope have different units; divided by how much the groups'
        own estimates differ, their moves are comparable and add up, and a group
        counts as shrinking much when it moves far relative to the spread of the
        groups.  The scale is the data's spread rather than the model's random-effects
        covariance, so the measure is defined for a singular fit too.  With one varying
        coefficient it is ``|partial - no| / s``.  A coefficient whose no-pooling
        estimates do not vary (``s_k`` 0 or undefined) is left out; with none left the
        measure is NaN.
        """
        groups = pd.Index(self.groups, name="group")
        no = self.method("no").reindex(groups)
        part = self.method("partial").reindex(groups)
        total, used = np.zeros(len(groups)), False
        for coef in self.varying:
            own = no[coef].to_numpy(dtype=float)
            spread = float(np.nanstd(own, ddof=1)) if np.isfinite(own).sum() > 1 else math.nan
            if math.isfinite(spread) and spread > 0:
                total = total + ((part[coef].to_numpy(dtype=float) - own) / spread) ** 2
                used = True
        moved = np.sqrt(total) if used else np.full(len(groups), math.nan)
        moved[~self.own_estimate.to_numpy()] = math.nan
        return pd.Series(moved, index=groups, name="shrinkage")


def _rebuild_estimates(cls, state):
    return cls(**state)


def pooling_formulas(response: str, predictor: str | None, group: str,
                     random: str = "intercept+slope") -> dict:
    """The formula of each method: the model whose coefficients are its estimates.

    Returns
    -------
    dict
        ``complete`` (an ``lm``), ``no`` (an ``lm`` with one coefficient per group for
        each varying coefficient) and ``partial`` (the ``lmer``), e.g.
        ``{"complete": "Reaction ~ Days", "no": "Reaction ~ 0 + Subject + Subject:Days",
        "partial": "Reaction ~ Days + (Days | Subject)"}``.  With ``predictor=None``:
        ``"y ~ 1"``, ``"y ~ 0 + g"`` and ``"y ~ 1 + (1 | g)"``.

    Notes
    -----
    ``lm(formulas["no"])`` gives the same estimates as one ``lm(response ~ predictor)``
    per group (``random="intercept+slope"``); where a group cannot give its own line,
    :func:`pooling_estimates` reports NaN rather than ``lm``'s partial answer.
    """
    random = _check_random(random, predictor)
    fixed = (predictor,) if predictor is not None else ()
    formulas = {"complete": compose_formula(response, fixed=fixed)}
    y, g = quote_name(response), quote_name(group)
    if predictor is None:
        formulas["no"] = f"{y} ~ 0 + {g}"
    else:
        x = quote_name(predictor)
        formulas["no"] = {"intercept+slope": f"{y} ~ 0 + {g} + {g}:{x}", "intercept": f"{y} ~ 0 + {g} + {x}",
                          "slope": f"{y} ~ {x}:{g}"}[random]
    formulas["partial"] = compose_formula(response, fixed=fixed, groups=(group,), random=random,
                                          slope=predictor)
    return formulas


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
                      random: str = "intercept+slope") -> PoolingEstimates:
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
    PoolingEstimates
        The mixed fit, the formulas (:func:`pooling_formulas`) and the table: one row
        per group per method (``"complete"``, ``"no"``, ``"partial"``) with columns
        ``group``, ``method``, ``intercept``, ``slope``, ``n``, ``note``.

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
    return PoolingEstimates(table=pd.concat(blocks, ignore_index=True), fit=fit, formulas=formulas,
                            response=response, predictor=predictor, group=group, random=random)


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


def shrinkage_sd(estimates: PoolingEstimates) -> pd.DataFrame:
    """Spread across groups of the no- and partial-pooling estimates.

    Parameters
    ----------
    estimates : PoolingEstimates
        The result of :func:`pooling_estimates`.

    Returns
    -------
    pandas.DataFrame
        Index ``"no"``, ``"partial"``; columns ``intercept``, ``slope``: the standard
        deviation (``ddof=1``, missing estimates skipped) of each method's estimates.
        Partial pooling's is smaller: that is the shrinkage.
    """
    if not isinstance(estimates, PoolingEstimates):
        raise LmmError("shrinkage_sd needs the result of pooling_estimates().")
    rows = {}
    for method in ("no", "partial"):
        sub = estimates.method(method)[list(COEFFICIENTS)].astype(float)
        sd = sub.std(ddof=1, skipna=True)
        # A coefficient shared by all groups (e.g. the common slope) has SD 0, not 1e-15.
        scale = sub.abs().max().fillna(0.0).clip(lower=1.0)
        rows[method] = sd.where(~(sd <= 1e-12 * scale), 0.0)
    return pd.DataFrame(rows).T.loc[["no", "partial"], list(COEFFICIENTS)]


def re_contours(fit, group: str | None = None, levels=(0.1, 0.3, 0.5, 0.7, 0.9),
                n_points: int = 100) -> pd.DataFrame:
    """Contour ellipses of one group's fitted bivariate normal random effects.

    Parameters
    ----------
    fit : PoolingEstimates or MixedFit
        Pooling estimates (their mixed fit and grouping factor are used), or a mixed
        model with a random intercept and one random slope for ``group``.
    group : str, optional
        Grouping factor name as lme4 names it (e.g. ``"Subject"``); needed with a
        MixedFit, defaults to the estimates' grouping factor.
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
    if isinstance(fit, PoolingEstimates):
        group = fit.group if group is None else group
        fit = fit.fit
    if group is None:
        raise LmmError("re_contours needs the grouping factor's name with a mixed model.")
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
