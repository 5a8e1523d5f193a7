"""Ordinary least squares (R's ``lm``): complete pooling, the model that ignores groups.

``lm(formula, data)`` builds the fixed-effects design with lmmcore's own formula grammar
(:func:`lmmcore.design.build_design`), fits it with statsmodels' OLS, and keeps R's
numbers: ``summary(lm(...))``'s coefficient table, residual standard error, R-squared
and F-test, and ``logLik``/``AIC``/``BIC`` with R's parameter count (``p + 1``: the
coefficients and sigma), so an ``lm`` can enter lme4's ``anova()`` beside an ``lmer``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.errors import FormulaError, LmmError
from lmmcore.results import ReadOnly


def lm(formula, data, *, categorical=None, numeric=None, reference_levels=None,
       data_name: str = "data") -> "LinearFit":
    """Fit a linear model by ordinary least squares, as R's ``lm(formula, data)``.

    Parameters
    ----------
    formula : str
        lme4-style formula without random terms, e.g. ``"Reaction ~ Days"``.
    data : pandas.DataFrame
    categorical, numeric, reference_levels
        Column treatment, as for :func:`lmmcore.design.build_design`.
    data_name : str
        Name shown in the summary's ``Call:`` line.

    Returns
    -------
    LinearFit

    Raises
    ------
    FormulaError
        A bad formula, or one with random terms (those need :func:`lmmcore.lmer`).
    DataError
        Columns or values that do not fit the formula.
    """
    from lmmcore.design import build_design, check_single_response
    from lmmcore.formula import parse_formula

    parsed = parse_formula(formula)
    if parsed.has_random:
        raise FormulaError(
            f"lm() fits fixed effects only, but '{formula}' has random terms "
            f"({', '.join(p.source for p in parsed.random)}). Use lmer() for a mixed model, "
            f"or lm('{parsed.fixed_text}') for the model without them.",
            formula=str(formula),
        )
    design = build_design(parsed, data, categorical=categorical, numeric=numeric,
                          reference_levels=reference_levels)
    check_single_response(design, "lm")
    if design.X.shape[1] == 0:
        raise LmmError(
            f"'{formula}' has no coefficients to estimate (no intercept and no predictors); "
            "add 1 or a predictor to the right of ~."
        )
    return LinearFit(design, data_name=data_name)


class LinearFit(ReadOnly):
    """A fitted ordinary least-squares model (read-only, picklable).

    Built by :func:`lm`; as :class:`lmmcore.mixed.MixedFit`, setting an attribute raises
    ``AttributeError`` and the Series and frames returned are fresh copies, so a caller
    cannot change the fit.

    Attributes
    ----------
    fixef, se, tvalue, pvalue : pandas.Series
        Coefficients, standard errors, t statistics and two-sided p-values, by R's
        coefficient names.  Columns dropped for linear dependence are not included
        (R shows them as NA; see ``messages``).
    vcov : pandas.DataFrame
    sigma : float
        Residual standard error ``sqrt(RSS / df_resid)``.
    df_resid : int
    rsquared, rsquared_adj, fvalue, f_pvalue : float
        As ``summary.lm``: centred R-squared when the model has an intercept, and the F
        test against the intercept-only model (NaN when there is nothing to test).
    f_df : tuple of int
        Numerator and denominator degrees of freedom of the F test.
    loglik, aic, bic, deviance : float
        Maximum-likelihood log-likelihood, AIC, BIC and ``-2 logLik`` with ``npar``
        parameters.
    rss : float
        Residual sum of squares (R's ``deviance(lm)``).
    npar : int
        Coefficients plus sigma (R's ``attr(logLik(fit), "df")``).
    nobs : int
    fitted, residuals : pandas.Series
        Indexed by the data's row labels of the rows used.
    formula : str
    design : MixedDesign
    data_name : str
    messages : list of str
        Dropped columns and rows, in plain words.
    reml : bool
        Always False (for :func:`lmmcore.anova`, which refits REML models only).
    """

    reml = False
    _read_only_hint = "call lm() again for a different fit"

    def __init__(self, design, data_name: str = "data"):
        import statsmodels.api as sm  # heavy import, paid only when an lm is fitted

        self.design = design
        self.data_name = data_name
        X, y = design.X, design.y
        n, p = X.shape
        res = sm.OLS(y, X).fit()
        beta = np.asarray(res.params, dtype=float)
        fitted = X @ beta
        resid = y - fitted
        rss = float(resid @ resid)
        rdf = n - p
        with np.errstate(divide="ignore", invalid="ignore"):
            resvar = rss / rdf if rdf > 0 else np.nan
            xtx_inv = np.linalg.pinv(X.T @ X)
            cov = resvar * xtx_inv
            se = np.sqrt(np.diag(cov))
            t = beta / se
        pval = 2.0 * stats.t.sf(np.abs(t), rdf) if rdf > 0 else np.full(p, np.nan)
        has_intercept = "(Intercept)" in design.fixed_names
        df_int = 1 if has_intercept else 0
        mss = float(np.sum((fitted - fitted.mean()) ** 2)) if has_intercept else float(fitted @ fitted)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = mss / (mss + rss) if (mss + rss) > 0 else np.nan
            r2_adj = 1.0 - (1.0 - r2) * ((n - df_int) / rdf) if rdf > 0 else np.nan
            numdf = p - df_int
            if numdf > 0 and rdf > 0:
                fval = (mss / numdf) / resvar
                f_p = float(stats.f.sf(fval, numdf, rdf))
            else:
                fval, f_p = np.nan, np.nan
        self._beta, self._se, self._t, self._p = beta, se, t, pval
        self._cov, self._fitted, self._resid = cov, fitted, resid
        self.nobs = int(n)
        self.df_resid = int(rdf)
        self.rss = rss
        self.sigma = math.sqrt(resvar) if rdf > 0 else float("nan")
        self.rsquared = float(r2)
        self.rsquared_adj = float(r2_adj)
        self.fvalue = float(fval)
        self.f_pvalue = float(f_p)
        self.f_df = (int(numdf), int(rdf))
        self.npar = int(p + 1)
        # R's logLik.lm: 0.5 * (-N * (log(2 pi) + 1 - log(N) + log(RSS)))
        with np.errstate(divide="ignore"):
            self.loglik = float(0.5 * (-n * (np.log(2 * np.pi) + 1.0 - np.log(n) + np.log(rss))))
        self.deviance = -2.0 * self.loglik
        self.aic = self.deviance + 2.0 * self.npar
        self.bic = self.deviance + math.log(n) * self.npar
        msgs = []
        if design.dropped_fixed:
            k = len(design.dropped_fixed)
            msgs.append(
                f"{k} coefficient{'s' if k != 1 else ''} not defined because of singularities "
                f"(the column{'s are' if k != 1 else ' is'} a linear combination of others): "
                f"{', '.join(design.dropped_fixed)}."
            )
        if design.n_dropped_na:
            msgs.append(f"{design.n_dropped_na} observations deleted due to missingness.")
        if rdf == 0:
            msgs.append("No residual degrees of freedom: the model fits the data exactly, so "
                        "standard errors and tests cannot be computed.")
        elif rss <= 1e-20 * max(1.0, float(y @ y)):
            msgs.append("Essentially perfect fit: the summary may be unreliable.")
        self._messages = tuple(msgs)
        self._freeze()

    def __delattr__(self, name):
        raise AttributeError("LinearFit is read-only")

    @property
    def formula(self) -> str:
        return self.design.formula

    def __repr__(self):
        return f"<LinearFit {self.formula!r}, nobs={self.nobs}>"

    # -- coefficients (fresh copies: the fit's arrays stay untouched) -----------------
    @property
    def _names(self) -> pd.Index:
        return pd.Index(self.design.fixed_names)

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._beta.copy(), index=self._names, name="Estimate")

    @property
    def se(self) -> pd.Series:
        return pd.Series(self._se.copy(), index=self._names, name="Std. Error")

    @property
    def tvalue(self) -> pd.Series:
        return pd.Series(self._t.copy(), index=self._names, name="t value")

    @property
    def pvalue(self) -> pd.Series:
        return pd.Series(self._p.copy(), index=self._names, name="Pr(>|t|)")

    @property
    def vcov(self) -> pd.DataFrame:
        return pd.DataFrame(self._cov.copy(), index=self._names, columns=self._names)

    @property
    def fitted(self) -> pd.Series:
        return pd.Series(self._fitted.copy(), index=self.design.row_index, name="fitted")

    @property
    def residuals(self) -> pd.Series:
        return pd.Series(self._resid.copy(), index=self.design.row_index, name="residuals")

    @property
    def messages(self) -> list:
        return list(self._messages)

    def predict(self, newdata: pd.DataFrame | None = None) -> pd.Series:
        """Predicted values for new data (the fitted values when ``newdata`` is None)."""
        if newdata is None:
            return self.fitted
        X = self.design.encoder.fixed_matrix(newdata)
        return pd.Series(X @ self._beta, index=newdata.index, name="predicted")

    def coef_table(self) -> pd.DataFrame:
        """``coef(summary(fit))``: Estimate, Std. Error, t value, Pr(>|t|)."""
        return pd.concat([self.fixef, self.se, self.tvalue, self.pvalue], axis=1)

    def summary(self) -> str:
        """The text of R's ``print(summary(lm(formula, data)))``
        (:func:`lmmcore.printing.lm_summary`)."""
        from lmmcore.printing import lm_summary

        return lm_summary(self)
