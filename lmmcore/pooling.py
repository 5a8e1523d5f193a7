"""Complete, no and partial pooling: three answers to "one line, or one per group?".

For a response, one predictor (numeric, or a factor) and one grouping factor:

* complete pooling ignores the groups: one ``lm(response ~ predictor)``;
* no pooling fits each group on its own (an ``lm`` per group, or per-group intercepts /
  slopes beside a common slope / intercept);
* partial pooling is the mixed model's ``coef()``: each group's estimate pulled
  ("shrunk") toward the fixed effects, the more so the less data the group has and the
  further it lies from the average.

With a factor as predictor (a two-condition experiment) the "slope" becomes each
non-reference level's effect under treatment coding, named as lme4 names it
(``condition2``), and :meth:`PoolingEstimates.condition_means` gives each group's mean
per condition under each method.

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
from lmmcore.formula import cbind_response, quote_name, response_text
from lmmcore.formula_menu import compose_formula
from lmmcore.results import ReadOnly
from lmmcore.rformat import format_r_number

__all__ = ["PoolingEstimates", "pooling_estimates", "pooling_formulas", "shrinkage_sd", "re_contours",
           "RANDOM_CHOICES", "FACTOR_RANDOM_CHOICES", "METHODS", "COEFFICIENTS"]

# The kinds of random part (lmmcore.formula_menu.RANDOM_KINDS, one vocabulary) the pooling
# comparison offers, in the order its menu lists them.
RANDOM_CHOICES = ("intercept+slope", "intercept", "slope")
# With a factor, "slope" alone would be lme4's (0 + f | g): one random effect per level
# (cell means), not the contrasts alone; so a factor offers these two.
FACTOR_RANDOM_CHOICES = ("intercept+slope", "intercept")
METHODS = ("complete", "no", "partial")
COEFFICIENTS = ("intercept", "slope")
# Which coefficients differ between groups, for each kind of random part.
_VARYING = {"intercept+slope": ("intercept", "slope"), "intercept": ("intercept",), "slope": ("slope",)}
# The table's columns besides the coefficients.
_ROW_COLUMNS = ("group", "method", "n", "note")


class PoolingEstimates(ReadOnly):
    """Each group's coefficients under several pooling methods, with what they came from.

    Made by :func:`pooling_estimates`; read-only (and picklable).  Consumers read it and
    never refit: it carries the mixed model that gave partial pooling.

    Attributes
    ----------
    response, group : str
        The response and grouping columns.
    predictor : str or None
        The predictor; None for an intercept-only comparison.
    levels : tuple of str or None
        A factor predictor's levels, the reference level first (lme4's treatment
        coding); None for a numeric predictor or none.
    random : str
        Which coefficients vary by group: one of :data:`RANDOM_CHOICES` (the
        vocabulary of ``lmmcore.formula_menu.RANDOM_KINDS``).
    family : str
        ``"gaussian"`` (lm / lmer), or ``"binomial"`` / ``"poisson"`` (glm / glmer),
        whose coefficients are on the link scale (log-odds, log of the expected count).
    fit : MixedFit or GlmmFit
        The partial-pooling mixed model (lme4's ``lmer``, REML, or ``glmer``).
    table : pandas.DataFrame
        The long table, one row per group per method: ``group`` (level label, lme4's
        order), ``method``, one column per coefficient (:attr:`columns`: ``intercept``,
        ``slope`` for a numeric predictor, NaN without one; ``intercept`` and lme4's
        contrast names such as ``condition2`` for a factor), ``n`` (the group's
        observations used) and ``note`` (why an estimate is missing, in plain words;
        else "").  A copy each time: changing it changes nothing here.
    formulas : dict
        Method -> the model formula whose coefficients are that method's estimates.

    Notes
    -----
    The table is generic in its methods (rows) and coefficients (columns): the lookups
    here (:meth:`method`, :meth:`wide`, :attr:`n`, :attr:`shrinkage`...) work for any
    set of methods, so another model family (estimates on its link scale) or a simulated
    truth can be added as methods of the same table.
    """

    _read_only_hint = "call pooling_estimates() again"

    def __init__(self, *, table: pd.DataFrame, fit, formulas: dict, response: str,
                 predictor: str | None, group: str, random: str, levels=None,
                 columns=COEFFICIENTS, family: str = "gaussian", _own_table: bool = False):
        # _own_table: ``table`` is this object's alone (just unpickled), no copy needed.
        columns = tuple(columns)
        needed = ["group", "method", *columns, "n", "note"]
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise LmmError(f"a pooling table needs the columns {', '.join(needed)}; "
                           f"missing: {', '.join(missing)}.")
        if random not in _VARYING:
            raise LmmError(f"random must be one of {', '.join(RANDOM_CHOICES)} (got '{random}').")
        if levels is not None and len(columns) != len(levels):
            raise LmmError("a factor's estimates need an intercept and one contrast per "
                           f"non-reference level ({len(levels) - 1}); got columns {', '.join(columns)}.")
        self._table = table if _own_table else table.reset_index(drop=True).copy()
        self.levels = tuple(str(v) for v in levels) if levels is not None else None
        self.columns = columns
        self._formulas = dict(formulas)
        self.fit = fit
        self.response = response
        self.predictor = predictor
        self.group = group
        self.random = random
        self.family = family
        self._freeze()

    def __reduce__(self):
        return (_rebuild_estimates, (type(self), self._state()))

    def _state(self) -> dict:
        return {"table": self._table, "fit": self.fit, "formulas": self._formulas,
                "response": self.response, "predictor": self.predictor, "group": self.group,
                "random": self.random, "levels": self.levels, "columns": self.columns,
                "family": self.family}

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
    def is_factor(self) -> bool:
        """Whether the predictor is a factor (its coefficients are condition effects)."""
        return self.levels is not None

    @property
    def slope_aliased(self) -> bool:
        """Whether no pooling's common slope is aliased with the groups (random intercepts,
        the predictor constant within every group): its estimate is NaN (R: NA) and each
        group's no-pooling line is its intercept alone, flat (R's ``predict()`` leaves the
        NA term out)."""
        if self.random != "intercept" or self.predictor is None or self.is_factor:
            return False
        return bool(self.method("no")["slope"].isna().all())

    @property
    def coefficients(self) -> tuple:
        """The coefficients estimated: ``("intercept", "slope")``, ``("intercept",)``
        without a predictor, ``("intercept", "condition2", ...)`` for a factor."""
        return self.columns if self.predictor is not None else self.columns[:1]

    @property
    def contrasts(self) -> tuple:
        """The coefficients besides the intercept (a factor's condition effects)."""
        return self.coefficients[1:]

    @property
    def varying(self) -> tuple:
        """The coefficients that differ between groups (the random part's)."""
        if self.is_factor:
            return self.coefficients if self.random == "intercept+slope" else ("intercept",)
        return _VARYING[self.random]

    def term(self, coefficient: str) -> str:
        """lme4's name of a coefficient: ``"(Intercept)"``, ``"Days"``, ``"condition2"``."""
        if coefficient not in self.coefficients:
            raise LmmError(f"no coefficient {coefficient!r}; the estimates hold "
                           f"{', '.join(self.coefficients)}.")
        return self.fit.design.fixed_names[self.coefficients.index(coefficient)]

    @property
    def fixef(self) -> pd.Series:
        """The mixed model's fixed effects, indexed by :attr:`columns` (``slope`` NaN
        without a predictor): the average that partial pooling shrinks toward."""
        fe = self.fit.fixef
        values = {c: float(fe[self.term(c)]) if c in self.coefficients else math.nan for c in self.columns}
        return pd.Series(values, name="fixef")

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

    def condition_means(self, name: str) -> pd.DataFrame:
        """A factor predictor: each group's fitted mean in each condition under a method.

        Returns
        -------
        pandas.DataFrame
            Indexed by group, one column per level (:attr:`levels`, reference first):
            the intercept for the reference level, intercept + the level's contrast for
            the others (treatment coding).  Under no pooling with a random intercept and
            contrasts these are the group's own cell means.
        """
        if not self.is_factor:
            raise LmmError("condition means need a factor as predictor; for a numeric one read "
                           "the intercept and slope.")
        rows = self.method(name).reindex(self.groups)
        a = rows["intercept"].to_numpy(dtype=float)
        out = {self.levels[0]: a}
        for level, coef in zip(self.levels[1:], self.contrasts):
            out[level] = a + rows[coef].to_numpy(dtype=float)
        return pd.DataFrame(out, index=pd.Index(self.groups, name="group"))

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
    def trials_response(self) -> bool:
        """Whether the response is ``cbind(successes, failures)`` (several binomial trials
        a row): its data are then proportions, see :meth:`observed`."""
        return cbind_response(self.response) is not None and self.family == "binomial"

    def observed(self, data: pd.DataFrame) -> pd.Series:
        """The response of each row of ``data`` on the data's scale, aligned with its index:
        the response column, or for a ``cbind(successes, failures)`` response the
        proportion ``successes / (successes + failures)`` (NaN where a value is missing
        or there are no trials)."""
        if not self.trials_response or self.response in data.columns:
            return pd.to_numeric(data[self.response], errors="coerce")
        from lmmcore.design import build_design
        from lmmcore.formula import parse_formula

        design = build_design(parse_formula(f"{self.response} ~ 1"), data)
        s, f = np.asarray(design.y, float), np.asarray(design.failures, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(s + f > 0, s / (s + f), np.nan)
        out = pd.Series(np.nan, index=data.index, name=self.response)
        out.loc[design.row_index] = share
        return out

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
    # The unpickled table belongs to the new object alone and was stored with its index
    # reset: copying it again was most of the time a cache read of the estimates took
    # (Streamlit's st.cache_data unpickles them for every session on every run).
    return cls(**state, _own_table=True)


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
    :func:`pooling_estimates` reports NaN rather than ``lm``'s partial answer.  The same
    formulas serve a factor predictor (``g:x`` is then each group's condition effects).
    """
    random = _check_random(random, predictor)
    fixed = (predictor,) if predictor is not None else ()
    formulas = {"complete": compose_formula(response, fixed=fixed)}
    y, g = response_text(response), quote_name(group)
    if predictor is None:
        formulas["no"] = f"{y} ~ 0 + {g}"
    else:
        x = quote_name(predictor)
        formulas["no"] = {"intercept+slope": f"{y} ~ 0 + {g} + {g}:{x}", "intercept": f"{y} ~ 0 + {g} + {x}",
                          "slope": f"{y} ~ {x}:{g}"}[random]
    formulas["partial"] = compose_formula(response, fixed=fixed, groups=(group,), random=random,
                                          slope=predictor)
    return formulas


def _check_random(random: str, predictor, factor: bool = False) -> str:
    random = str(random).replace(" ", "").lower()
    if random not in RANDOM_CHOICES:
        raise LmmError(f"random must be one of {', '.join(RANDOM_CHOICES)} (got '{random}').")
    if factor and random not in FACTOR_RANDOM_CHOICES:
        raise LmmError(f"with a factor as predictor the random part is one of "
                       f"{', '.join(FACTOR_RANDOM_CHOICES)} (a random 'slope' alone would give each "
                       f"level its own random effect, not the condition effects).")
    if predictor is None:
        if random == "slope":
            raise LmmError("a random slope needs a predictor: choose a numeric predictor column.")
        return "intercept"
    return random


def pooling_estimates(data: pd.DataFrame, response: str, predictor: str | None, group: str,
                      random: str = "intercept+slope", family: str = "gaussian", *,
                      factor: bool | None = None,
                      reference_levels: dict | None = None) -> PoolingEstimates:
    """Each group's intercept and slope (or condition effects) under complete, no and
    partial pooling.

    Parameters
    ----------
    data : pandas.DataFrame
    response : str
        Numeric response column; for ``family="binomial"`` also a ``cbind(successes,
        failures)`` response such as ``"cbind(incidence, size - incidence)"`` (several
        trials per row: the estimates are then of the proportion of successes, the glm
        and glmer weighted by the trials, as R's).
    predictor : str or None
        Predictor column, numeric or a factor; None for intercept-only models (then the
        estimates are the grand mean, the group means and the mixed model's group
        intercepts, and ``slope`` is NaN).
    group : str
        Grouping column (treated as categorical).
    random : {"intercept+slope", "intercept", "slope"}
        Which coefficients vary by group in the partial- and no-pooling models (a
        factor: :data:`FACTOR_RANDOM_CHOICES`).
    family : {"gaussian", "binomial", "poisson"}
        ``"gaussian"``: ``lm`` and ``lmer``.  ``"binomial"`` (a 0/1 or two-category
        response) and ``"poisson"`` (counts): ``glm`` and ``glmer``, estimates on the
        link scale; a group whose own ``glm`` has no finite estimate (separation: e.g.
        all its responses are 1, or all counts 0) gets NaN and says so in ``note``.
        A factor predictor is for ``"gaussian"`` only.
    factor : bool, optional
        Treat the predictor as a factor; by default, when its column is not numeric.
    reference_levels : dict, optional
        Column -> reference level of a factor (as ``lmer``'s); else the first level.

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

    With ``"intercept"`` and a predictor constant within every group (a property of the
    group), the common slope is aliased with the groups' intercepts: as in R, its
    estimate is NaN (R: NA) and each group's intercept is the model's without it (the
    group's mean; for a glm, its own intercept-only glm), every group noting why.

    These least-squares fits are computed in closed form from per-group sums (no loop
    of model fits).  A group whose data cannot give an estimate (one observation, or no
    variation in the predictor) gets NaN, never 0.  Partial pooling is ``coef()`` of
    ``lmer(response ~ predictor + (... | group))`` (REML), complete pooling ``lm``; rows
    with a missing value in any of the three columns are left out of all three.

    Binomial and Poisson no pooling is the glm of ``formulas["no"]`` (a glm per group for
    ``"intercept+slope"``).  Where a group's data are separated (all 0 or all 1; the 0s
    and 1s split by the predictor, completely or apart from ties; all counts 0, or 0 on
    one side of the predictor) its coefficients have no finite maximum likelihood
    estimate: R's glm stops at a large number (and may warn "fitted probabilities
    numerically 0 or 1 occurred").  Those rows are found by a linear programme
    (:func:`lmmcore.glmm.separated_rows`); the group's coefficients that the other rows do
    not identify are NaN, with a note saying why, and the rest are the glm of the other
    rows (the limit of R's iterations).

    With a factor the coefficients are the intercept (the reference level's mean) and
    one condition effect per other level (treatment coding, lme4's names).  No pooling is
    one ``lm(response ~ predictor)`` per group (its cell means; a group missing a level
    gets NaN for that level's effect, and for all of them without the reference level)
    or ``lm(response ~ 0 + group + predictor)``; partial pooling is ``coef()`` of
    ``lmer(response ~ predictor + (predictor | group))`` or ``(1 | group)``.
    """
    from lmmcore.linear import lm
    from lmmcore.mixed import lmer

    if not isinstance(data, pd.DataFrame):
        raise DataError("pooling_estimates needs a table (pandas DataFrame).")
    counts = cbind_response(response) if response not in data.columns else None
    if counts is not None and family != "binomial":
        raise DataError(f"{response} is a binomial response (successes, failures): choose "
                        "family='binomial'.")
    responses = list(counts.columns) if counts is not None else [response]
    cols = [*responses, group] + ([predictor] if predictor is not None else [])
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise DataError(f"no column {', '.join(repr(c) for c in missing)} in the data; "
                        f"columns are: {', '.join(map(str, data.columns[:25]))}.")
    if len(set(cols)) < len(cols):
        raise DataError("response, predictor and group must be three different columns.")
    if factor is None:
        factor = predictor is not None and not pd.api.types.is_numeric_dtype(data[predictor])
    factor = bool(factor) and predictor is not None
    random = _check_random(random, predictor, factor)
    d = data[cols].dropna().reset_index(drop=True)
    formulas = pooling_formulas(response, predictor, group, random)
    if family != "gaussian":
        if factor:
            raise LmmError("pooling for a binomial or Poisson response takes a numeric predictor "
                           f"(or none); '{predictor}' is a factor. Fit the glmer on the model page.")
        return _glm_pooling(d, response, predictor, group, random, formulas, family)
    kinds = {"categorical": [group] + ([predictor] if factor else []),
             "numeric": [c for c in (response, predictor) if c is not None and not (factor and c == predictor)],
             "reference_levels": reference_levels}
    fit = lmer(formulas["partial"], d, **kinds)
    if factor:
        return _factor_estimates(d, fit, formulas, response, predictor, group, random, kinds)
    numeric = kinds["numeric"]
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

    table = _pooling_table(levels, n_g, (c_int, c_slope), (no_int, no_slope, notes),
                           (p_int, p_slope))
    return PoolingEstimates(table=table, fit=fit, formulas=formulas,
                            response=response, predictor=predictor, group=group, random=random)


def _pooling_table(levels, n_g, complete, no, partial) -> pd.DataFrame:
    """The long table: complete pooling's (intercept, slope), no pooling's (intercepts,
    slopes, notes) and partial pooling's (intercepts, slopes) per group."""
    m = len(levels)
    blocks = []
    for method, ints, slopes, note in (
        ("complete", np.full(m, complete[0]), np.full(m, complete[1]), [""] * m),
        ("no", no[0], no[1], no[2]),
        ("partial", partial[0], partial[1], [""] * m),
    ):
        blocks.append(pd.DataFrame({
            "group": pd.Series(levels, dtype="str"), "method": method,
            "intercept": np.asarray(ints, dtype=float), "slope": np.asarray(slopes, dtype=float),
            "n": n_g.astype(int), "note": pd.Series(list(note), dtype="str"),
        }))
    return pd.concat(blocks, ignore_index=True)


def _glm_pooling(d, response, predictor, group, random, formulas, family) -> PoolingEstimates:
    """pooling_estimates for a binomial or Poisson response: glm, a glm per group, glmer
    (see its Notes on separation)."""
    from lmmcore.generalized import _family, glmer
    from lmmcore.glmm import estimable_columns, fit_glm, separated_rows

    fam = _family(family)
    numeric = [predictor] if predictor is not None else None
    fit = glmer(formulas["partial"], d, fam.name, categorical=[group], numeric=numeric)
    design = fit.design
    term = design.random_terms[0]
    levels = [str(lv) for lv in term.levels]
    codes = np.asarray(term.codes)
    m = len(levels)
    problem = fit._problem
    y = np.asarray(problem.y, dtype=float)
    trials = np.asarray(problem.trials, dtype=float)   # 1 for a 0/1 response
    weights = np.asarray(problem.weights, dtype=float)
    n_g = np.bincount(codes, minlength=m).astype(float)
    X = np.asarray(design.X, dtype=float)

    cb = fit_glm(fam, X, y, weights)[0]
    c_int = float(cb[0])
    c_slope = float(cb[1]) if predictor is not None else np.nan

    coef = next(iter(fit.coef.values())).copy()
    coef.index = [str(i) for i in coef.index]
    coef = coef.reindex(levels)
    p_int = coef["(Intercept)"].to_numpy(dtype=float)
    p_slope = (coef[list(design.fixed_names)[1]].to_numpy(dtype=float)
               if predictor is not None else np.full(m, np.nan))

    # no pooling: one glm whose design separates the groups (the likelihood splits by
    # group, so the group coefficients are those of a glm per group); cols[k] holds the
    # design columns of the intercepts (k = 0) and slopes (k = 1), one per group
    onehot = np.zeros((len(y), m))
    onehot[np.arange(len(y)), codes] = 1.0
    x = X[:, 1] if predictor is not None else None
    groups_ = np.arange(m)
    if x is None:
        Xn, cols = onehot, (groups_, None)
    elif random == "intercept+slope":
        Xn, cols = np.hstack([onehot, onehot * x[:, None]]), (groups_, m + groups_)
    elif random == "intercept":
        Xn, cols = np.hstack([onehot, x[:, None]]), (groups_, np.full(m, m))
    else:
        Xn, cols = np.hstack([np.ones((len(y), 1)), onehot * x[:, None]]), (np.zeros(m, int), 1 + groups_)
    notes = np.array([""] * m, dtype=object)
    common_slope_lost = False
    if x is not None and random == "intercept":
        xbar = np.bincount(codes, weights=x, minlength=m) / n_g
        within = float(np.sum((x - xbar[codes]) ** 2))
        # x is a property of the group: the common slope is not identified (R: NA)
        common_slope_lost = within <= 1e-12 * max(float(np.sum(x * x)), np.finfo(float).tiny)
    if common_slope_lost:
        # as R's glm(y ~ 0 + group + x): x is aliased with the groups, its coefficient NA;
        # the groups' intercepts are those of the model without it
        Xn, cols = onehot, (groups_, None)
    # Rows fitted exactly only at infinite coefficients are left out; the coefficients
    # the other rows identify are the finite estimates, the others have none.
    separated = separated_rows(fam, Xn, y, weights)
    kept = ~separated & (weights > 0)
    finite = estimable_columns(Xn, kept)
    beta = np.full(Xn.shape[1], np.nan)
    if kept.any():
        beta = fit_glm(fam, Xn[kept], y[kept], weights[kept])[0]
    beta = np.where(finite, beta, np.nan)
    no_int = beta[cols[0]]
    no_slope = beta[cols[1]] if cols[1] is not None else np.full(m, np.nan)
    varying = [cols[0] if random != "slope" else None, cols[1] if random != "intercept" else None]
    for j in range(m):
        lost = any(c is not None and not finite[c[j]] for c in varying)
        if lost:
            notes[j] = _glm_note(fam, predictor, random, x, y, trials, codes == j, separated)
    for j in np.flatnonzero(notes != ""):
        # no partial answers: a group without its own estimate shows none
        no_int[j] = np.nan
        if x is not None and random != "intercept":
            no_slope[j] = np.nan
    if common_slope_lost:
        no_slope[:] = np.nan
        notes[notes == ""] = _slope_aliased_note(predictor)
    formulas = dict(formulas)
    formulas["complete"] = f"glm({formulas['complete']}, family = {fam.name})"
    formulas["no"] = f"glm({formulas['no']}, family = {fam.name})"
    table = _pooling_table(levels, n_g, (c_int, c_slope), (no_int, no_slope, notes),
                           (p_int, p_slope))
    return PoolingEstimates(table=table, fit=fit, formulas=formulas,
                            response=response, predictor=predictor, group=group, random=random,
                            family=fam.name)


def _slope_aliased_note(predictor) -> str:
    """The note of every group when the predictor is constant within each group (random
    intercepts): the no-pooling model's common slope is aliased with the groups."""
    return (f"{predictor} does not vary within any group: the common slope of the no-pooling "
            "model cannot be estimated (R: NA), so each group's own estimate is its intercept "
            "alone, drawn flat")


def _glm_note(fam, predictor, random, x, y, trials, rows, separated) -> str:
    """Why one group's own glm has no finite estimate, in plain words."""
    n = int(rows.sum())
    yj, sep = y[rows], separated[rows]
    xj = x[rows] if x is not None else None
    line = x is not None and random == "intercept+slope"
    if line and n < 2:
        return "only 1 observation: no line can be fitted"
    if line and np.ptp(xj) <= 1e-12 * max(np.abs(xj).max(), 1e-300):
        return f"all {n} observations have the same {predictor} value: no line can be fitted"
    if random == "slope" and x is not None and np.all(xj == 0):
        return f"all observations at {predictor} = 0: no slope through the common intercept can be estimated"
    if not sep.any():
        return "its data do not identify the group's own estimate"
    if fam.name == "poisson":
        if np.all(yj == 0):
            return (f"all {n} counts are 0: the group's own log expected count is minus infinity, "
                    "so no pooling has no finite estimate")
        zeros = xj[sep]
        side = "below" if zeros.max() <= xj[~sep].min() else "above"
        return (f"the counts are 0 at every {predictor} {side} {_num(xj[~sep].min() if side == 'below' else xj[~sep].max())}: "
                "the group's own slope of the log expected count is infinite (separation), so no "
                "pooling has no finite estimate")
    binary = bool(np.all(trials[rows] == 1))
    if np.all(yj == 0) or np.all(yj == 1):
        if binary:
            said = f"all {n} responses are {int(yj[0])}"
        else:
            said = f"all {int(trials[rows].sum())} trials are {'successes' if yj[0] == 1 else 'failures'}"
        return (f"{said}: the group's own log-odds is {'plus' if yj[0] == 1 else 'minus'} infinity "
                "(separation), so no pooling has no finite estimate")
    how = (f"{predictor} separates the {'0s from the 1s' if binary else 'successes from the failures'} "
           "in this group")
    if not sep.all():
        ties = ", ".join(_num(v) for v in np.unique(xj[~sep])[:3])
        how += f" except at {predictor} = {ties} (quasi-complete separation)"
    return f"{how}: its own slope is infinite, so no pooling has no finite estimate"


def _num(v) -> str:
    """A predictor value in a note, as R's ``cat()`` shows it."""
    return format_r_number(float(v))


def _factor_estimates(d, fit, formulas, response, predictor, group, random, kinds) -> PoolingEstimates:
    """:func:`pooling_estimates` for a factor predictor (see its Notes)."""
    from lmmcore.linear import lm

    design = fit.design
    term = design.random_terms[0]
    groups = [str(lv) for lv in term.levels]
    codes = np.asarray(term.codes)
    levels = [str(v) for v in design.encoder.levels[predictor]]
    contrasts = [str(c) for c in design.fixed_names[1:]]
    if len(contrasts) != len(levels) - 1:
        raise LmmError(f"'{predictor}' has {len(levels)} levels but the model estimates "
                       f"{len(contrasts)} condition effects; check the data.")
    columns = ("intercept", *contrasts)
    clash = set(columns) & set(_ROW_COLUMNS)
    if clash:
        raise DataError(f"the condition effect {', '.join(sorted(clash))} has the name of a column of the "
                        "estimates table; rename the predictor column.")
    m, k = len(groups), len(levels)
    y = np.asarray(design.y, dtype=float)
    # Each row's level from its treatment-coded columns (all zero: the reference level).
    x = np.zeros(len(y), dtype=int)
    for j in range(1, k):
        x[np.asarray(design.X[:, j]) == 1] = j
    n_g = np.bincount(codes, minlength=m)

    complete = lm(formulas["complete"], d, **kinds).fixef.to_numpy(dtype=float)
    coef = next(iter(fit.coef.values())).copy()
    coef.index = [str(i) for i in coef.index]
    partial = coef.reindex(groups)[list(design.fixed_names)].to_numpy(dtype=float)

    notes = np.array([""] * m, dtype=object)
    if random == "intercept+slope":
        cells = np.bincount(codes * k + x, minlength=m * k).reshape(m, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.bincount(codes * k + x, weights=y, minlength=m * k).reshape(m, k) / cells
        no = np.column_stack([means[:, 0], means[:, 1:] - means[:, :1]])
        for j in range(m):
            absent = [levels[i] for i in range(k) if cells[j, i] == 0]
            if absent:
                notes[j] = (f"no observations at {predictor} = {', '.join(absent)}: "
                            + ("no condition effects can be estimated" if cells[j, 0] == 0
                               else "no effect of " + ", ".join(absent) + " can be estimated"))
    else:
        fit_no = lm(formulas["no"], d, **kinds)
        names = list(fit_no.design.fixed_names)
        b = fit_no.fixef.to_numpy(dtype=float)
        if len(names) != m + k - 1:
            raise LmmError(f"the no-pooling model {formulas['no']} cannot be estimated: some groups "
                           f"and levels of {predictor} are confounded.")
        by_group = dict(zip(fit_no.design.encoder.levels[group], b[:m]))
        no = np.column_stack([[by_group[g] for g in groups]] + [np.full(m, v) for v in b[m:]])
    blocks = []
    for method, values, note in (("complete", np.tile(complete, (m, 1)), [""] * m),
                                 ("no", no, notes), ("partial", partial, [""] * m)):
        block = pd.DataFrame({"group": pd.Series(groups, dtype="str"), "method": method})
        for i, c in enumerate(columns):
            block[c] = np.asarray(values[:, i], dtype=float)
        block["n"] = n_g.astype(int)
        block["note"] = pd.Series(list(note), dtype="str")
        blocks.append(block)
    return PoolingEstimates(table=pd.concat(blocks, ignore_index=True), fit=fit, formulas=formulas,
                            response=response, predictor=predictor, group=group, random=random,
                            levels=levels, columns=columns)


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
            # as R's lm(y ~ 0 + group + x): x is aliased with the groups, its coefficient
            # NA; each group's intercept is then its mean
            notes[:] = _slope_aliased_note(predictor)
            return ybar, np.full(m, np.nan), notes
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
        Index ``"no"``, ``"partial"``; columns the estimates' :attr:`~PoolingEstimates.columns`
        (``intercept``, ``slope``; or ``intercept`` and a factor's condition effects): the
        standard deviation (``ddof=1``, missing estimates skipped) of each method's
        estimates.  Partial pooling's is smaller: that is the shrinkage.
    """
    if not isinstance(estimates, PoolingEstimates):
        raise LmmError("shrinkage_sd needs the result of pooling_estimates().")
    columns = list(estimates.columns)
    rows = {}
    for method in ("no", "partial"):
        sub = estimates.method(method)[columns].astype(float)
        sd = sub.std(ddof=1, skipna=True)
        # A coefficient shared by all groups (e.g. the common slope) has SD 0, not 1e-15.
        scale = sub.abs().max().fillna(0.0).clip(lower=1.0)
        rows[method] = sd.where(~(sd <= 1e-12 * scale), 0.0)
    return pd.DataFrame(rows).T.loc[["no", "partial"], columns]


def re_contours(fit, group: str | None = None, levels=(0.1, 0.3, 0.5, 0.7, 0.9),
                n_points: int = 100, term: str | None = None) -> pd.DataFrame:
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
    term : str, optional
        With more than one random slope (a factor of three or more levels): which one
        is the second axis, by lme4's name (``"stages3"``) or, with estimates, by their
        coefficient name.  The ellipses are then of the (intercept, term) margin.

    Returns
    -------
    pandas.DataFrame
        Columns ``level``, ``intercept``, ``slope`` (the second term's value, a slope or
        a condition effect): ``n_points`` rows per level.
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
        if term is not None and term in fit.coefficients:
            term = fit.term(term)
        fit = fit.fit
    if group is None:
        raise LmmError("re_contours needs the grouping factor's name with a mixed model.")
    if not hasattr(fit, "re_cov"):
        raise LmmError("re_contours needs a mixed model fitted with lmer().")
    cov = fit.re_cov(group)
    terms = list(cov.columns)
    if term is not None and (term not in terms or term == "(Intercept)"):
        raise LmmError(f"no random slope {term!r} for '{group}'; its random effects are: {', '.join(terms)}.")
    if "(Intercept)" not in terms or len(terms) < 2 or (term is None and len(terms) != 2):
        raise LmmError(
            f"the contour plot needs a random intercept and one random slope for '{group}', "
            f"but its random effects are: {', '.join(terms)}. Fit e.g. (x | {group}), or name "
            "the slope (term=...)."
        )
    slope_term = term if term is not None else next(t for t in terms if t != "(Intercept)")
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
