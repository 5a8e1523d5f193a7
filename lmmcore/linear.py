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
from lmmcore.rformat import (
    format_coef_matrix,
    format_g,
    format_named_vector,
    format_pvalues,
    format_r_number,
    format_signif,
    zapsmall,
)


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


class LinearFit:
    """A fitted ordinary least-squares model (read-only, picklable).

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

    def __init__(self, design, data_name: str = "data"):
        import statsmodels.api as sm  # heavy import, paid only when an lm is fitted

        self.design = design
        self.data_name = data_name
        X, y = design.X, design.y
        n, p = X.shape
        names = list(design.fixed_names)
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
        has_intercept = "(Intercept)" in names
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
        idx = pd.Index(names)
        self.fixef = pd.Series(beta, index=idx, name="Estimate")
        self.se = pd.Series(se, index=idx, name="Std. Error")
        self.tvalue = pd.Series(t, index=idx, name="t value")
        self.pvalue = pd.Series(pval, index=idx, name="Pr(>|t|)")
        self.vcov = pd.DataFrame(cov, index=idx, columns=idx)
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
        self.fitted = pd.Series(fitted, index=design.row_index, name="fitted")
        self.residuals = pd.Series(resid, index=design.row_index, name="residuals")
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
        self.messages = msgs

    @property
    def formula(self) -> str:
        return self.design.formula

    def __repr__(self):
        return f"<LinearFit {self.formula!r}, nobs={self.nobs}>"

    def predict(self, newdata: pd.DataFrame | None = None) -> pd.Series:
        """Predicted values for new data (the fitted values when ``newdata`` is None)."""
        if newdata is None:
            return self.fitted.copy()
        X = self.design.encoder.fixed_matrix(newdata)
        return pd.Series(X @ self.fixef.to_numpy(), index=newdata.index, name="predicted")

    def coef_table(self) -> pd.DataFrame:
        """``coef(summary(fit))``: Estimate, Std. Error, t value, Pr(>|t|)."""
        return pd.concat([self.fixef, self.se, self.tvalue, self.pvalue], axis=1)

    def summary(self) -> str:
        """The text of R's ``print(summary(lm(formula, data)))``."""
        digits = 4
        lines = ["", "Call:", f"lm(formula = {self.formula}, data = {self.data_name})", "",
                 "Residuals:"]
        resid = self.residuals.to_numpy()
        rdf = self.df_resid
        if rdf > 5:
            q = zapsmall(np.quantile(resid, [0, 0.25, 0.5, 0.75, 1.0]), digits + 1)
            lines += format_named_vector(q, ["Min", "1Q", "Median", "3Q", "Max"], digits)
        elif rdf > 0:
            names = [str(i + 1) if isinstance(i, (int, np.integer)) else str(i)
                     for i in self.residuals.index]
            lines += format_named_vector(resid, names, digits)
        else:
            lines.append(f"ALL {self.nobs} residuals are 0: no residual degrees of freedom!")
        dropped = list(self.design.dropped_fixed)
        if dropped:
            lines += ["", f"Coefficients: ({len(dropped)} not defined because of singularities)"]
        else:
            lines += ["", "Coefficients:"]
        table = self.coef_table().to_numpy()
        rows = list(self.fixef.index)
        if dropped:
            table = np.vstack([table, np.full((len(dropped), 4), np.nan)])
            rows += dropped
        lines += format_coef_matrix(
            table, rows, ["Estimate", "Std. Error", "t value", "Pr(>|t|)"],
            digits=digits, cs_ind=(0, 1), tst_ind=(2,), has_pvalue=True, na_print="NA",
        )
        lines += ["", f"Residual standard error: {format_signif(self.sigma, digits)} on {rdf} "
                  "degrees of freedom"]
        if self.design.n_dropped_na:
            k = self.design.n_dropped_na
            lines.append(f"  ({k} observation{'s' if k != 1 else ''} deleted due to missingness)")
        if not math.isnan(self.fvalue):
            lines.append(f"Multiple R-squared:  {format_g(self.rsquared, digits)},\t"
                         f"Adjusted R-squared:  {format_g(self.rsquared_adj, digits)} ")
            lines.append(f"F-statistic: {format_g(self.fvalue, digits)} on "
                         f"{format_r_number(self.f_df[0])} and {format_r_number(self.f_df[1])} DF,  "
                         f"p-value: {format_pvalues([self.f_pvalue], digits)[0]}")
        lines.append("")
        return "\n".join(lines) + "\n"
