"""The fitted linear mixed model: ``lmer`` and its read-only results object ``MixedFit``.

``lmer`` is lme4's thin driver: formula + data -> :class:`~lmmcore.structure.MixedDesign`
(``lmmcore.design.build_design``) -> profiled deviance (``lmmcore.deviance``) ->
optimum (``lmmcore.optimize``) -> :class:`MixedFit` (lme4's ``mkMerMod``).  Everything
that only a summary needs (conditional SDs, residual quantiles, the summary text) is
computed lazily on first access, so the fit itself stays fast.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pandas as pd

from lmmcore import deviance as _dev
from lmmcore.design import check_grouping_factor
from lmmcore.errors import DataError, FitError
from lmmcore.optimize import check_convergence, minimize_theta
from lmmcore.structure import MixedDesign

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


_BLAS = None


def _one_blas_thread():
    """Run BLAS single-threaded during a fit.

    The fit makes thousands of small BLAS calls; OpenBLAS's worker threads spin-wait
    between them, which on a busy 2-core server costs milliseconds per call.  One thread
    is as fast for these sizes and predictable when several students fit at once.
    """
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unusable: run with the default threads
        import contextlib
        return contextlib.nullcontext()


def fit_design(design: MixedDesign, reml: bool = True, data_name: str = "data") -> "MixedFit":
    """Fit the model of an already built design (the engine without the formula step)."""
    with _one_blas_thread():
        return _fit_design(design, reml, data_name)


def _fit_design(design: MixedDesign, reml: bool, data_name: str) -> "MixedFit":
    _check_design(design)
    cp = _dev.cross_products(design)
    dev = _dev.ProfiledDeviance(cp, reml)
    lower = dev.lower()
    theta, value, record = minimize_theta(dev, dev.start(), lower)
    if not np.isfinite(value):
        raise FitError("The model could not be fitted: the response is fitted exactly by the "
                       "fixed effects, so there is no residual variation to split up.")
    check = check_convergence(dev, theta, value, lower, record.final_gradient)
    sol = _dev.solve(cp, theta, reml)
    return MixedFit(design, bool(reml), cp, sol, record, check, data_name)


class MixedFit:
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

    _frozen = False

    def __init__(self, design, reml, cp, solution, record, check, data_name):
        self.design = design
        self.reml = reml
        self._cp = cp
        self._sol = solution
        self.optimizer = record
        self._check = check
        self.data_name = data_name
        self._frozen = True

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError("MixedFit is read-only; use refit() for a different fit")
        object.__setattr__(self, name, value)

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
    def df_resid(self) -> int:
        return self.nobs - self.npar

    @property
    def aic(self) -> float:
        return self.deviance + 2.0 * self.npar

    @property
    def bic(self) -> float:
        return self.deviance + self.npar * math.log(self.nobs)

    @property
    def is_singular(self) -> bool:
        return self._check.singular

    @property
    def converged(self) -> bool:
        return bool(self._check.converged and self.optimizer.converged)

    @property
    def lme4_messages(self) -> list:
        """Warnings and messages worded exactly as lme4 prints them."""
        msgs = []
        if self.design.dropped_fixed:
            k = len(self.design.dropped_fixed)
            msgs.append(f"fixed-effect model matrix is rank deficient so dropping {k} "
                        f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}")
        msgs.extend(self._check.lme4_messages)
        return msgs

    @cached_property
    def messages(self) -> list:
        """Warnings in plain words (each followed by lme4's wording where there is one)."""
        out = []
        dropped = self.design.dropped_fixed
        if dropped:
            k = len(dropped)
            out.append(
                f"The fixed-effects columns are linearly dependent, so {k} column"
                f"{'s were' if k != 1 else ' was'} dropped: {', '.join(dropped)} (lme4: "
                f"fixed-effect model matrix is rank deficient so dropping {k} "
                f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}).")
        if self.design.n_dropped_na:
            out.append(f"{self.design.n_dropped_na} rows with missing values in the model's "
                       "columns were left out.")
        for m in self._check.lme4_messages:
            if m.startswith("boundary (singular)"):
                out.append(f"{_SINGULAR_PLAIN} (lme4: {m})")
            elif m.startswith("Model failed to converge with"):
                out.append("The optimizer may not have reached the optimum: the gradient at the "
                           f"estimates is not close enough to zero (lme4: {m}). Try rescaling "
                           "predictors or simplifying the random part.")
            else:
                out.append(f"Convergence check: {m}")
        if not self.optimizer.converged:
            out.append(f"The optimizer stopped before converging: {self.optimizer.message}")
        return out

    @property
    def ngroups(self) -> dict:
        out = {}
        for t in self.design.random_terms:
            out.setdefault(t.group_name, t.n_levels)
        return out

    # -- fixed effects ------------------------------------------------------------
    @property
    def fixed_names(self) -> list:
        return list(self.design.fixed_names)

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._sol.beta.copy(), index=self.fixed_names, name="Estimate")

    @cached_property
    def _vcov_array(self) -> np.ndarray:
        return self._sol.sigma ** 2 * self._sol.unscaled_vcov()

    @property
    def vcov(self) -> pd.DataFrame:
        return pd.DataFrame(self._vcov_array.copy(), index=self.fixed_names,
                            columns=self.fixed_names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._vcov_array)), index=self.fixed_names,
                         name="Std. Error")

    @property
    def tvalue(self) -> pd.Series:
        return pd.Series(self._sol.beta / np.sqrt(np.diag(self._vcov_array)),
                         index=self.fixed_names, name="t value")

    @property
    def corr_fixef(self) -> pd.DataFrame:
        v = self._vcov_array
        s = np.sqrt(np.diag(v))
        return pd.DataFrame(v / np.outer(s, s), index=self.fixed_names, columns=self.fixed_names)

    # -- random effects -----------------------------------------------------------
    def _grouped_terms(self) -> dict:
        """group name -> list of term indices (terms of one factor merged, as lme4's ranef)."""
        groups = {}
        for i, t in enumerate(self.design.random_terms):
            groups.setdefault(t.group_name, []).append(i)
        return groups

    @cached_property
    def _ranef(self) -> dict:
        out = {}
        terms = self.design.random_terms
        for g, idx in self._grouped_terms().items():
            levels = list(terms[idx[0]].levels)
            blocks, cols = [], []
            for i in idx:
                blocks.append(self._sol.b[i])
                cols.extend(terms[i].column_names)
            out[g] = pd.DataFrame(np.hstack(blocks), index=pd.Index(levels, name=g), columns=cols)
        return out

    @property
    def ranef(self) -> dict:
        return {g: df.copy() for g, df in self._ranef.items()}

    @property
    def coef(self) -> dict:
        fe = self.fixef
        out = {}
        for g, re in self._ranef.items():
            df = pd.DataFrame(np.tile(fe.to_numpy(), (len(re), 1)), index=re.index,
                              columns=list(fe.index))
            for c in re.columns:
                if c in df.columns:
                    df[c] = df[c] + re[c]
                else:
                    df[c] = re[c]
            out[g] = df
        return out

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
        idx = self._group_index(group)
        names, blocks = [], []
        for i in idx:
            t = self.design.random_terms[i]
            T = self._cp.layouts[i].template(self._sol.theta)
            blocks.append(self._sol.sigma ** 2 * T @ T.T)
            names.extend(t.column_names)
        k = len(names)
        cov = np.zeros((k, k))
        off = 0
        for b in blocks:
            cov[off:off + b.shape[0], off:off + b.shape[0]] = b
            off += b.shape[0]
        return pd.DataFrame(cov, index=names, columns=names)

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        rows = []
        seen = {}
        for i, t in enumerate(self.design.random_terms):
            n_seen = seen.get(t.group_name, 0)
            seen[t.group_name] = n_seen + 1
            grp = t.group_name if n_seen == 0 else f"{t.group_name}.{n_seen}"
            T = self._cp.layouts[i].template(self._sol.theta)
            cov = self._sol.sigma ** 2 * T @ T.T
            sd = np.sqrt(np.diag(cov))
            names = t.column_names
            for a in range(len(names)):
                rows.append((grp, names[a], None, cov[a, a], sd[a]))
            for a in range(len(names)):
                for c in range(a + 1, len(names)):
                    corr = cov[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else np.nan
                    rows.append((grp, names[a], names[c], cov[a, c], corr))
        rows.append(("Residual", None, None, self._sol.sigma ** 2, self._sol.sigma))
        cols = list(zip(*rows))
        # object columns keep None for R's NA (pandas would turn it into NaN)
        return pd.DataFrame({
            "grp": pd.Series(cols[0], dtype=object), "var1": pd.Series(cols[1], dtype=object),
            "var2": pd.Series(cols[2], dtype=object),
            "vcov": np.array(cols[3], float), "sdcor": np.array(cols[4], float)})

    # -- fitted values ------------------------------------------------------------
    @cached_property
    def _fitted(self) -> np.ndarray:
        d = self.design
        f = np.asarray(d.X, float) @ self._sol.beta
        for t, b in zip(d.random_terms, self._sol.b):
            f = f + np.einsum("nk,nk->n", np.asarray(t.Z_raw, float), b[t.codes])
        return f

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

    def predict(self, newdata: pd.DataFrame | None = None, include_random: bool = True) -> pd.Series:
        """Predictions for new data (lme4's ``predict(fit, newdata, allow.new.levels=TRUE)``).

        Levels of a grouping factor not seen in fitting get the population prediction
        (their random effects are taken as 0).  ``include_random=False`` gives the
        fixed-effects prediction (``re.form = NA``).
        """
        if newdata is None:
            if include_random:
                return self.fitted
            return pd.Series(np.asarray(self.design.X, float) @ self._sol.beta,
                             index=self.design.row_index, name="predicted")
        enc = self.design.encoder
        X = np.asarray(enc.fixed_matrix(newdata), float)
        pred = X @ self._sol.beta
        if include_random:
            for (codes, Z_raw), b in zip(enc.group_codes(newdata), self._sol.b):
                codes = np.asarray(codes, np.intp)
                known = codes >= 0
                Zr = np.asarray(Z_raw, float).reshape(len(codes), -1)
                contrib = np.zeros(len(codes))
                contrib[known] = np.einsum("nk,nk->n", Zr[known], b[codes[known]])
                pred = pred + contrib
        return pd.Series(pred, index=newdata.index, name="predicted")

    # -- functions of the fit -----------------------------------------------------
    def deviance_function(self) -> _dev.ProfiledDeviance:
        """The profiled objective as a function of theta (REML or ML as fitted)."""
        return _dev.ProfiledDeviance(self._cp, self.reml)

    def refit(self, reml: bool | None = None) -> "MixedFit":
        """Fit the same design again, e.g. with ML (``reml=False``) for a likelihood-ratio test."""
        reml = self.reml if reml is None else bool(reml)
        if reml == self.reml:
            return self
        return fit_design(self.design, reml=reml, data_name=self.data_name)

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
        with _one_blas_thread():
            return varpar_derivatives(self)

    @cached_property
    def _kenward_roger(self):
        from lmmcore.inference import KenwardRoger
        with _one_blas_thread():
            return KenwardRoger(self)

    # -- summary ------------------------------------------------------------------
    def summary(self) -> str:
        """The text of lme4 1.1-31's ``print(summary(fit))`` (:func:`lmmcore.printing.lmer_summary`)."""
        return self._summary_text

    @cached_property
    def _summary_text(self) -> str:
        from lmmcore.printing import lmer_summary

        return lmer_summary(self)


def _rebuild_fit(design, reml, cp, sol, record, check, data_name):
    return MixedFit(design, reml, cp, sol, record, check, data_name)
