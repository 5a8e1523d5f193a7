"""The fitted linear mixed model: ``lmer`` and its read-only results object ``MixedFit``.

``lmer`` is lme4's thin driver: formula + data -> :class:`~lmmcore.structure.MixedDesign`
(``lmmcore.design.build_design``) -> profiled deviance (``lmmcore.deviance``) ->
optimum (``lmmcore.optimize``) -> :class:`MixedFit` (lme4's ``mkMerMod``).  Everything
that only a summary needs (conditional SDs, residual quantiles, the summary text) is
computed lazily on first access, so the fit itself stays fast.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
import pandas as pd

from lmmcore import deviance as _dev
from lmmcore.design import check_grouping_factor, check_single_response
from lmmcore.errors import DataError, FitError
from lmmcore.optimize import check_convergence, minimize_theta, one_blas_thread, theta_space
from lmmcore.structure import MixedDesign
from lmmcore.results import FixedEffectsAndGroups, InformationCriteria, ReadOnly

__all__ = ["lmer", "fit_design", "MixedFit"]

_SINGULAR_PLAIN = (
    "The fit is singular: at least one random-effect variance is estimated as (almost) zero, "
    "or two random effects are perfectly correlated. The data do not support this much "
    "random-effects structure; consider a simpler random part.")


def lmer(formula: str, data: pd.DataFrame, reml: bool = True, *, categorical=None,
         numeric=None, reference_levels=None, data_name: str = "data") -> "MixedFit":
    """Fit a linear mixed model as lme4's ``lmer`` does.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    reml : bool, default True
        REML (lme4's default) or maximum likelihood.
    categorical, numeric : iterable of str, optional
        Columns to treat as categorical / numeric (see ``build_design``).
    reference_levels : dict, optional
        Reference level per categorical column.
    data_name : str
        The name printed after ``Data:`` in the summary.

    Returns
    -------
    MixedFit

    Raises
    ------
    FormulaError, DataError, FitError
        For a formula, data or model the engine cannot fit, with a message saying why.
    """
    from lmmcore.design import build_design

    design = build_design(formula, data, categorical=categorical, numeric=numeric,
                          reference_levels=reference_levels)
    return fit_design(design, reml=reml, data_name=data_name)


def _check_design(design: MixedDesign) -> None:
    """lme4's pre-fit checks (check.nlev.gtr.1, check.nobs.vs.nlev, check.nobs.vs.nRE)."""
    n = design.nobs
    if not design.random_terms:
        raise FitError("The formula has no random-effects term such as (1 | group); "
                       "use lm() for a model without random effects.")
    check_single_response(design, "lmer")
    p = design.X.shape[1]
    if n <= p:
        raise DataError(f"Only {n} complete observations for {p} fixed-effect coefficients: "
                        "the model needs more rows than coefficients.")
    if not np.all(np.isfinite(design.y)) or not np.all(np.isfinite(design.X)):
        raise DataError("The response or a predictor contains infinite values; remove them.")
    for term in design.random_terms:
        m = term.n_levels
        used = int(np.count_nonzero(np.bincount(np.asarray(term.codes), minlength=m)))
        text = f"({' + '.join(term.column_names)} | {term.group_name})"
        check_grouping_factor(term.group_name, text, used, term.n_columns, n)


def fit_design(design: MixedDesign, reml: bool = True, data_name: str = "data") -> "MixedFit":
    """Fit the model of an already built design (the engine without the formula step)."""
    with one_blas_thread():
        return _fit_design(design, reml, data_name)


def _fit_design(design: MixedDesign, reml: bool, data_name: str) -> "MixedFit":
    _check_design(design)
    cp = _dev.cross_products(design)
    return _fit_cross_products(design, cp, reml, data_name)


def _fit_cross_products(design: MixedDesign, cp, reml: bool, data_name: str,
                        warm: "MixedFit | None" = None) -> "MixedFit":
    """Minimise the profiled criterion of ``cp`` (from the optimum of the fit ``warm``
    and its curvature, lme4's start if None), check the optimum as lme4 does and
    package it."""
    dev = _dev.ProfiledDeviance(cp, reml)
    space = theta_space(cp.layouts)
    if warm is None:
        theta, value, record = minimize_theta(dev, space)
    else:
        theta, value, record = minimize_theta(dev, space, warm._sol.theta,
                                              warm.optimizer.final_hessian)
    if not np.isfinite(value):
        raise FitError("The model could not be fitted: the response is fitted exactly by the "
                       "fixed effects, so there is no residual variation to split up.")
    check = check_convergence(dev, theta, value, space.lower, record.final_gradient,
                              record.final_hessian)
    sol = dev.solution(theta)
    return MixedFit(design, bool(reml), cp, sol, record, check, data_name)


class MixedFit(ReadOnly, InformationCriteria, FixedEffectsAndGroups):
    """A fitted linear mixed model (read-only; picklable).

    Built by :func:`lmer` / :func:`fit_design`; the attributes mirror lme4's extractors
    (``fixef``, ``ranef``, ``VarCorr``, ``sigma``, ``logLik``...).  Arrays and frames
    returned are fresh copies or read-only views of the fit's state.

    Notes
    -----
    ``loglik`` is the REML log-likelihood for a REML fit and the log-likelihood for an
    ML fit (lme4's ``logLik``); ``deviance`` is ``-2 * loglik`` in both cases, so for a
    REML fit it equals the REML criterion (lme4's ``REMLcrit``), not the ML deviance.
    ``npar`` counts fixed effects, theta and sigma (lme4's logLik ``df``).
    """

    _read_only_hint = "use refit() for a different fit"

    def __init__(self, design, reml, cp, solution, record, check, data_name):
        self.design = design
        self.reml = reml
        self._cp = cp
        self._sol = solution
        self.optimizer = record
        self._check = check
        self.data_name = data_name
        self._freeze()

    def __reduce__(self):
        return (_rebuild_fit, (self.design, self.reml, self._cp, self._sol, self.optimizer,
                               self._check, self.data_name))

    def __repr__(self):
        kind = "REML" if self.reml else "ML"
        return f"<MixedFit {self.formula!r} ({kind}), nobs={self.nobs}>"

    # -- basic quantities ---------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.design.formula

    @property
    def nobs(self) -> int:
        return self._cp.n

    @property
    def theta(self) -> np.ndarray:
        return self._sol.theta.copy()

    @property
    def sigma(self) -> float:
        return self._sol.sigma

    @property
    def objective(self) -> float:
        """The optimum of the profiled criterion (REML criterion or ML deviance)."""
        return self._sol.objective

    @property
    def reml_criterion(self):
        return self._sol.objective if self.reml else None

    @property
    def loglik(self) -> float:
        return -0.5 * self._sol.objective

    @property
    def deviance(self) -> float:
        return -2.0 * self.loglik

    @property
    def npar(self) -> int:
        return self._cp.p + self._cp.n_theta + 1

    @property
    def is_singular(self) -> bool:
        return self._check.singular

    @property
    def converged(self) -> bool:
        return bool(self._check.converged and self.optimizer.converged)

    @property
    def lme4_messages(self) -> list:
        """Warnings and messages worded exactly as lme4 prints them."""
        return design_lme4_messages(self.design) + list(self._check.lme4_messages)

    @cached_property
    def messages(self) -> list:
        """Warnings in plain words (each followed by lme4's wording where there is one)."""
        out = plain_messages(self.design, self._check.lme4_messages)
        if not self.optimizer.converged:
            out.append(f"The optimizer stopped before converging: {self.optimizer.message}")
        return out

    # -- fixed effects ------------------------------------------------------------

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._sol.beta.copy(), index=self.fixed_names, name="Estimate")

    @cached_property
    def _vcov_array(self) -> np.ndarray:
        return self._sol.sigma ** 2 * self._sol.unscaled_vcov()

    @property
    def tvalue(self) -> pd.Series:
        return pd.Series(self._sol.beta / np.sqrt(np.diag(self._vcov_array)),
                         index=self.fixed_names, name="t value")

    # -- random effects -----------------------------------------------------------
    def _grouped_terms(self) -> dict:
        return grouped_terms(self.design)

    @cached_property
    def _ranef(self) -> dict:
        return ranef_frames(self.design, self._sol.b)

    @property
    def ranef(self) -> dict:
        return {g: df.copy() for g, df in self._ranef.items()}

    @property
    def coef(self) -> dict:
        return coef_frames(self.fixef, self._ranef)

    @cached_property
    def _cond_var(self) -> tuple:
        return _dev.conditional_variances(self._cp, self._sol.factor)

    @property
    def ranef_sd(self) -> dict:
        """Conditional SDs of the random effects (lme4's ``condVar``), shaped like ranef."""
        s2 = self._sol.sigma ** 2
        out = {}
        for g, idx in self._grouped_terms().items():
            sds = [np.sqrt(s2 * np.diagonal(self._cond_var[i], axis1=1, axis2=2)) for i in idx]
            re = self._ranef[g]
            out[g] = pd.DataFrame(np.hstack(sds), index=re.index, columns=re.columns)
        return out

    def ranef_condvar(self, group: str) -> np.ndarray:
        """Conditional covariance matrices (levels, k, k) of one factor's random effects."""
        idx = self._group_index(group)
        s2 = self._sol.sigma ** 2
        if len(idx) == 1:
            return s2 * self._cond_var[idx[0]]
        ks = [self.design.random_terms[i].n_columns for i in idx]
        m = self.design.random_terms[idx[0]].n_levels
        out = np.zeros((m, sum(ks), sum(ks)))
        off = 0
        for i, k in zip(idx, ks):
            out[:, off:off + k, off:off + k] = s2 * self._cond_var[i]
            off += k
        return out

    def _group_index(self, group: str) -> list:
        groups = self._grouped_terms()
        if group not in groups:
            raise DataError(f"No random effects for '{group}'; the grouping factors are "
                            f"{', '.join(groups)}.")
        return groups[group]

    def re_cov(self, group: str) -> pd.DataFrame:
        """Estimated covariance matrix of one grouping factor's random effects."""
        return group_covariance(self.design, self._re_covariances(), group)

    def _re_covariances(self) -> list:
        """Per random term, the covariance matrix of its random effects."""
        return [self._sol.sigma ** 2 * T @ T.T for T in
                (lay.template(self._sol.theta) for lay in self._cp.layouts)]

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        return varcorr_frame(self.design, self._re_covariances(), self._sol.sigma)

    # -- fitted values ------------------------------------------------------------
    @cached_property
    def _fitted(self) -> np.ndarray:
        d = self.design
        return self.linear_predictor(d.X, [(t.codes, t.Z_raw) for t in d.random_terms])

    @property
    def fitted(self) -> pd.Series:
        return pd.Series(self._fitted, index=self.design.row_index, name="fitted")

    @property
    def residuals(self) -> pd.Series:
        return pd.Series(np.asarray(self.design.y, float) - self._fitted,
                         index=self.design.row_index, name="residuals")

    @property
    def scaled_residuals(self) -> pd.Series:
        return self.residuals / self.sigma

    @cached_property
    def scaled_resid_quantiles(self) -> pd.Series:
        q = np.quantile(self.scaled_residuals.to_numpy(), [0, 0.25, 0.5, 0.75, 1.0])
        return pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"])

    # -- intervals, predictions and influence (lmmcore.intervals / prediction / influence)
    def confint(self, method: str = "profile", level: float = 0.95, nsim: int = 1000,
                seed=None, progress=None) -> pd.DataFrame:
        """lme4's ``confint(fit, method=..., oldNames = FALSE)``: ``"profile"``, ``"wald"``
        (fixed effects only) or ``"boot"`` (parametric bootstrap, percentile limits;
        ``progress(done, total)`` returning False stops it with
        :class:`~lmmcore.errors.BootstrapCancelled`).  See :mod:`lmmcore.intervals`."""
        from lmmcore.intervals import confint
        return confint(self, method, level, nsim, seed, progress)

    def bootstrap(self, nsim: int = 1000, seed=None, progress=None):
        """bootMer's parametric bootstrap replicates (:func:`lmmcore.intervals.bootstrap`)."""
        from lmmcore.intervals import bootstrap
        return bootstrap(self, nsim, seed, progress)

    def predict(self, newdata: pd.DataFrame | None = None, re_form: str = "full",
                interval=None, level: float = 0.95, include_random: bool | None = None):
        """Predictions as lme4's ``predict(fit, newdata, re.form, allow.new.levels = TRUE)``;
        with ``interval`` ("confidence" or "prediction") a DataFrame ``fit, se_fit, lwr,
        upr``.  See :mod:`lmmcore.prediction`.  ``include_random`` is the old spelling of
        ``re_form`` (True: "full", False: "none") and is deprecated."""
        from lmmcore.prediction import predict
        if include_random is not None:
            import warnings
            warnings.warn("predict(include_random=...) is deprecated; use re_form='full' or "
                          "re_form='none'", DeprecationWarning, stacklevel=2)
            re_form = "full" if include_random else "none"
        return predict(self, newdata, re_form, interval, level)

    def linear_predictor(self, X, groups=None) -> np.ndarray:
        """``X beta``, plus ``Z b`` when ``groups`` is given, for rows already in model
        matrix form: the step under :meth:`predict` for rows that need no encoding
        (cross-validation reuses the full data's matrices for every split).

        ``X``: the rows' fixed-effects matrix (this fit's columns); ``groups``: one
        ``(codes, Z_raw)`` per random term in the design's order, codes indexing this
        fit's levels (-1: a level it was not fitted with, which contributes 0, as with
        lme4's ``allow.new.levels = TRUE``).
        """
        X = np.asarray(X, float)
        eta = X @ self._sol.beta
        if groups is not None:
            eta = eta + random_part_of(groups, self._sol.b, X.shape[0])
        return eta

    def influence(self, group: str) -> pd.DataFrame:
        """lme4's ``influence(fit, groups = group)``: Cook's distance and the fixed effects
        refitted without each level (:func:`lmmcore.influence.influence`)."""
        from lmmcore.influence import influence
        return influence(self, group)

    # -- functions of the fit -----------------------------------------------------
    def deviance_function(self) -> _dev.ProfiledDeviance:
        """The profiled objective as a function of theta (REML or ML as fitted)."""
        return _dev.ProfiledDeviance(self._cp, self.reml)

    def refit(self, y=None, reml: bool | None = None) -> "MixedFit":
        """Fit the same model again to a new response, or with REML / ML.

        Parameters
        ----------
        y : array_like, optional
            A new response, one value per observation of this fit in its order
            (``fit.design.row_index``; a pandas Series is taken by position, not by
            index), as lme4's ``refit(fit, newresp)`` for ``bootMer`` and simulations.
        reml : bool, optional
            REML or ML; the fit's own criterion if None.

        Returns
        -------
        MixedFit
            With ``y``: the fit of the same design to ``y``.  It reuses the parsed
            formula, the model matrices, the cross products that do not involve y, the
            sparsity pattern and the fill-reducing structure, and starts the optimiser
            from this fit's theta and curvature (same criterion); the optimum equals a fresh ``lmer`` on data with
            this response to the optimiser's tolerance.  Without ``y``: this fit when
            ``reml`` is unchanged, else a fresh fit of the same design from lme4's start
            (lme4's ``refitML`` for ``reml=False``, e.g. for a likelihood-ratio test).

        Raises
        ------
        DataError
            When ``y`` has the wrong length or a missing or infinite value.

        Examples
        --------
        A parametric bootstrap draws responses from the fit and refits each::

            boot = [fit.refit(y_star).fixef for y_star in draws]
        """
        reml = self.reml if reml is None else bool(reml)
        if y is None:
            if reml == self.reml:
                return self
            return fit_design(self.design, reml=reml, data_name=self.data_name)
        y = _new_response(y, self.nobs)
        cp = _dev.with_response(self._cp, self._response_map, y)
        design = replace(self.design, y=y)
        with one_blas_thread():
            fit = _fit_cross_products(design, cp, reml, self.data_name,
                                      warm=self if reml == self.reml else None)
        fit.__dict__["_response_map"] = self._response_map   # same design: share the map
        return fit

    def refit_subset(self, rows, y=None, warm_start: bool = True) -> "MixedFit":
        """Fit the same model to a subset of its observations (cross-validation).

        Parameters
        ----------
        rows : array_like of int or bool
            Positions of the observations to keep (0 .. nobs - 1, in the fit's order,
            ``fit.design.row_index``), or a boolean mask of length ``nobs``.
        y : array_like, optional
            A response for the kept rows (default: the fit's own response there).
        warm_start : bool, default True
            Start the optimiser from this fit's theta and curvature (fewer
            evaluations); False starts from lme4's start, as a fresh ``lmer`` would.

        Returns
        -------
        MixedFit
            The fit on the subset.  The encoded model matrices are reused (no formula
            parsing or encoding); levels of a grouping factor left without rows are
            dropped, as lme4 drops unused levels, and ``predict(newdata)`` gives those
            levels the population prediction.  Equal to a fresh ``lmer`` on the subset
            of the data to the optimiser's tolerance.

        Raises
        ------
        DataError
            For positions out of range, or when the subset leaves the fixed effects
            rank deficient (lme4 would drop a column there; refit on the subset's data
            with ``lmer`` instead).
        FitError
            When lme4's checks fail on the subset (e.g. a grouping factor with one level).

        Examples
        --------
        Leave-one-group-out::

            for g in groups:
                sub = fit.refit_subset(codes != g)
                pred = sub.predict(data[codes == g])
        """
        design = _design_subset(self.design, rows)
        if y is not None:
            design = replace(design, y=_new_response(y, design.nobs))
        with one_blas_thread():
            _check_design(design)
            cp = _dev.cross_products(design)
            return _fit_cross_products(design, cp, self.reml, self.data_name,
                                       warm=self if warm_start else None)

    @cached_property
    def _response_map(self):
        return _dev.response_map(self._cp, self.design)

    def simulate(self, nsim: int = 1, seed=None) -> pd.DataFrame:
        """New responses drawn from the fitted model, as lme4's ``simulate(fit, nsim, seed)``.

        Each copy draws new random effects ``b ~ N(0, Sigma-hat)`` for every level and new
        residuals ``N(0, sigma-hat^2)`` on the fitted rows (lme4's default ``use.u = FALSE``,
        ``re.form = NA``): data the fitted model says could have been observed instead.

        Parameters
        ----------
        nsim : int
            Number of copies, 1 to 10,000 (and at most 20 million values in all).
        seed : int or numpy.random.Generator, optional
            Reproduces the draw (numpy's generator: not R's numbers for the same seed).

        Returns
        -------
        pandas.DataFrame
            Columns ``sim_1`` ... ``sim_<nsim>`` (lme4's names), one row per observation
            used in the fit, indexed like :attr:`fitted`.
        """
        from lmmcore.errors import LmmError

        try:
            k = int(nsim)
            ok = not isinstance(nsim, bool) and k == nsim
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or not 1 <= k <= 10_000 or k * self.nobs > 20_000_000:
            raise LmmError(f"nsim must be a whole number from 1 to 10,000 with nsim x rows at most "
                           f"20 million (got {nsim!r} for {self.nobs:,} rows).")
        rng = np.random.default_rng(seed)
        d = self.design
        sigma = self._sol.sigma
        y = np.repeat((np.asarray(d.X, float) @ self._sol.beta)[:, None], k, axis=1)
        for i, t in enumerate(d.random_terms):
            # b = sigma * Lambda_theta u, u standard normal (lme4's relative covariance factor)
            T = self._cp.layouts[i].template(self._sol.theta)
            u = rng.standard_normal((k, t.n_levels, t.n_columns))
            b = sigma * u @ T.T
            Z = np.asarray(t.Z_raw, float)
            y += np.einsum("nc,snc->ns", Z, b[:, np.asarray(t.codes), :])
        y += sigma * rng.standard_normal(y.shape)
        return pd.DataFrame(y, index=d.row_index, columns=[f"sim_{j + 1}" for j in range(k)])

    # -- tests with denominator df (lmerTest, pbkrtest; lmmcore.inference) ---------
    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """lmerTest's ``summary(fit, ddf=...)$coefficients``.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "lme4"}
            Satterthwaite's df; Kenward-Roger's df with pbkrtest's adjusted standard
            errors (REML fits only); or lme4's table (no df, no p-values).

        Returns
        -------
        pandas.DataFrame
            Indexed by the coefficient names, columns ``Estimate``, ``Std. Error``, ``df``,
            ``t value``, ``Pr(>|t|)`` (no ``df`` and ``Pr(>|t|)`` for ``"lme4"``).
        """
        from lmmcore.inference import coef_table
        return coef_table(self, ddf)

    def anova_fixed(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """lmerTest's type III ``anova(fit, ddf=...)``: one F-test per model term.

        Columns ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``;
        a factor's columns are tested jointly.  ``ddf`` is ``"satterthwaite"`` or
        ``"kenward-roger"``.
        """
        from lmmcore.inference import anova_fixed
        return anova_fixed(self, ddf)

    @cached_property
    def _varpar_derivatives(self):
        from lmmcore.inference import varpar_derivatives
        # dozens of small factorisations: one BLAS thread, as in the fit (20x faster when busy)
        with one_blas_thread():
            return varpar_derivatives(self)

    @cached_property
    def _kenward_roger(self):
        from lmmcore.inference import KenwardRoger
        with one_blas_thread():
            return KenwardRoger(self)

    # -- summary ------------------------------------------------------------------
    def summary(self) -> str:
        """The text of lme4 1.1-31's ``print(summary(fit))`` (:func:`lmmcore.printing.lmer_summary`)."""
        return self._summary_text

    @cached_property
    def _summary_text(self) -> str:
        from lmmcore.printing import lmer_summary

        return lmer_summary(self)


def _new_response(y, n: int) -> np.ndarray:
    """A new response vector of length ``n`` (refit), as float; DataError if unusable."""
    y = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, float)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"The new response must be one value per observation: {n} values, "
                        f"got shape {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise DataError("The new response contains missing or infinite values; "
                        "give a finite value for every observation.")
    return y


class _SubsetEncoder:
    """The full design's encoder with group codes mapped to a subset's levels
    (a level without rows in the subset gets -1: the population prediction)."""

    def __init__(self, encoder, code_maps):
        self.encoder = encoder
        self.code_maps = code_maps

    def fixed_matrix(self, newdata):
        return self.encoder.fixed_matrix(newdata)

    def group_codes(self, newdata):
        out = []
        for (codes, Z), new_code in zip(self.encoder.group_codes(newdata), self.code_maps):
            codes = np.asarray(codes, np.intp)
            mapped = np.full(codes.shape, -1, np.intp)
            known = codes >= 0
            mapped[known] = new_code[codes[known]]
            out.append((mapped, Z))
        return out


def _design_subset(design: MixedDesign, rows) -> MixedDesign:
    """The rows ``rows`` (positions or a boolean mask) of ``design``, unused levels of
    each grouping factor dropped, the encoding kept (see ``MixedFit.refit_subset``)."""
    n = design.nobs
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise DataError(f"A boolean row mask needs one value per observation ({n}).")
        rows = np.flatnonzero(rows)
    rows = rows.astype(np.intp, copy=False)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n)):
        raise DataError(f"Row positions must be between 0 and {n - 1}.")
    X = np.asarray(design.X, float)[rows]
    if X.shape[1] and np.linalg.matrix_rank(X) < X.shape[1]:
        raise DataError("On these rows the fixed-effects columns are linearly dependent "
                        f"({', '.join(design.fixed_names)}); fit the subset of the data with "
                        "lmer() instead, which drops the redundant columns as lme4 does.")
    terms, code_maps = [], []
    for t in design.random_terms:
        codes = np.asarray(t.codes, np.intp)[rows]
        used = np.flatnonzero(np.bincount(codes, minlength=t.n_levels))
        new_code = np.full(t.n_levels, -1, np.intp)
        new_code[used] = np.arange(used.size)
        levels = t.levels if used.size == t.n_levels else tuple(t.levels[i] for i in used)
        terms.append(replace(t, levels=levels, codes=new_code[codes],
                             Z_raw=np.asarray(t.Z_raw)[rows]))
        code_maps.append(new_code)
    encoder = design.encoder
    if encoder is not None and any(m.size != len(t.levels) for m, t in zip(code_maps, terms)):
        encoder = _SubsetEncoder(encoder, code_maps)
    return replace(design, y=np.asarray(design.y, float)[rows], X=X, random_terms=tuple(terms),
                   row_index=design.row_index[rows], encoder=encoder)


# ---------------------------------------------------------------------------
# Pieces shared by the results of lmer (MixedFit) and glmer (GlmmFit)


def design_lme4_messages(design: MixedDesign) -> list:
    """lme4's message about dropped fixed-effects columns, if any."""
    k = len(design.dropped_fixed)
    if not k:
        return []
    return [f"fixed-effect model matrix is rank deficient so dropping {k} "
            f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}"]


def plain_messages(design: MixedDesign, lme4_messages) -> list:
    """The design's and the convergence check's messages in plain words (each followed by
    lme4's wording where there is one)."""
    out = []
    dropped = design.dropped_fixed
    if dropped:
        k = len(dropped)
        out.append(f"The fixed-effects columns are linearly dependent, so {k} column"
                   f"{'s were' if k != 1 else ' was'} dropped: {', '.join(dropped)} (lme4: "
                   f"{design_lme4_messages(design)[0]}).")
    if design.n_dropped_na:
        out.append(f"{design.n_dropped_na} rows with missing values in the model's "
                   "columns were left out.")
    for m in lme4_messages:
        if m.startswith("boundary (singular)"):
            out.append(f"{_SINGULAR_PLAIN} (lme4: {m})")
        elif m.startswith("Model failed to converge with"):
            out.append("The optimizer may not have reached the optimum: the gradient at the "
                       f"estimates is not close enough to zero (lme4: {m}). Try rescaling "
                       "predictors or simplifying the random part.")
        else:
            out.append(f"Convergence check: {m}")
    return out


def group_sizes(design: MixedDesign) -> dict:
    """Grouping factor -> number of levels (lme4's ngrps)."""
    out = {}
    for t in design.random_terms:
        out.setdefault(t.group_name, t.n_levels)
    return out


def correlation_frame(v: np.ndarray, names) -> pd.DataFrame:
    """A covariance matrix as a correlation table."""
    s = np.sqrt(np.diag(v))
    return pd.DataFrame(v / np.outer(s, s), index=list(names), columns=list(names))


def grouped_terms(design: MixedDesign) -> dict:
    """group name -> list of term indices (terms of one factor merged, as lme4's ranef)."""
    groups = {}
    for i, t in enumerate(design.random_terms):
        groups.setdefault(t.group_name, []).append(i)
    return groups


def ranef_frames(design: MixedDesign, b) -> dict:
    """lme4's ``ranef()``: per grouping factor, levels x columns; ``b[i]`` is term i's
    random effects as (levels, k)."""
    out = {}
    terms = design.random_terms
    for g, idx in grouped_terms(design).items():
        cols = [c for i in idx for c in terms[i].column_names]
        out[g] = pd.DataFrame(np.hstack([b[i] for i in idx]),
                              index=pd.Index(list(terms[idx[0]].levels), name=g), columns=cols)
    return out


def coef_frames(fixef: pd.Series, ranef: dict) -> dict:
    """lme4's ``coef()``: fixed plus random effects per level."""
    out = {}
    for g, re in ranef.items():
        df = pd.DataFrame(np.tile(fixef.to_numpy(), (len(re), 1)), index=re.index,
                          columns=list(fixef.index))
        for c in re.columns:
            df[c] = df[c] + re[c] if c in df.columns else re[c]
        out[g] = df
    return out


def random_part(design: MixedDesign, b, newdata: pd.DataFrame) -> np.ndarray:
    """Z b on new data; levels not seen in fitting contribute 0."""
    return random_part_of(design.encoder.group_codes(newdata), b, len(newdata))


def random_part_of(groups, b, n: int) -> np.ndarray:
    """Z b from each term's ``(codes, Z_raw)`` rows (code -1, a level not seen in fitting,
    contributes 0) and its conditional modes ``b`` (levels x columns)."""
    total = np.zeros(n)
    for (codes, Z_raw), bi in zip(groups, b):
        codes = np.asarray(codes, np.intp)
        known = codes >= 0
        Zr = np.asarray(Z_raw, float).reshape(n, -1)
        total[known] += np.einsum("nk,nk->n", Zr[known], bi[codes[known]])
    return total


def _group_labels(design: MixedDesign) -> list:
    """lme4's group label of each term: a factor's second term is "g.1", and so on."""
    seen, out = {}, []
    for t in design.random_terms:
        n_seen = seen.get(t.group_name, 0)
        seen[t.group_name] = n_seen + 1
        out.append(t.group_name if n_seen == 0 else f"{t.group_name}.{n_seen}")
    return out


def group_covariance(design: MixedDesign, covs, group: str) -> pd.DataFrame:
    """The covariance matrix of one grouping factor's random effects (its terms' blocks)."""
    groups = grouped_terms(design)
    if group not in groups:
        raise DataError(f"No random effects for '{group}'; the grouping factors are "
                        f"{', '.join(groups)}.")
    names = [c for i in groups[group] for c in design.random_terms[i].column_names]
    cov = np.zeros((len(names), len(names)))
    off = 0
    for i in groups[group]:
        k = covs[i].shape[0]
        cov[off:off + k, off:off + k] = covs[i]
        off += k
    return pd.DataFrame(cov, index=names, columns=names)


def varcorr_frame(design: MixedDesign, covs, residual_sd=None) -> pd.DataFrame:
    """lme4's ``as.data.frame(VarCorr(fit))`` from each term's covariance matrix; a
    "Residual" row when ``residual_sd`` is given (lmer, not glmer's binomial/Poisson)."""
    rows = []
    for t, grp, cov in zip(design.random_terms, _group_labels(design), covs):
        sd = np.sqrt(np.diag(cov))
        names = t.column_names
        for a in range(len(names)):
            rows.append((grp, names[a], None, cov[a, a], sd[a]))
        for a in range(len(names)):
            for c in range(a + 1, len(names)):
                corr = cov[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else np.nan
                rows.append((grp, names[a], names[c], cov[a, c], corr))
    if residual_sd is not None:
        rows.append(("Residual", None, None, residual_sd ** 2, residual_sd))
    cols = list(zip(*rows))
    # object columns keep None for R's NA (pandas would turn it into NaN)
    return pd.DataFrame({
        "grp": pd.Series(cols[0], dtype=object), "var1": pd.Series(cols[1], dtype=object),
        "var2": pd.Series(cols[2], dtype=object),
        "vcov": np.array(cols[3], float), "sdcor": np.array(cols[4], float)})


def _rebuild_fit(design, reml, cp, sol, record, check, data_name):
    return MixedFit(design, reml, cp, sol, record, check, data_name)
