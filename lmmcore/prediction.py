"""Predictions from a fitted mixed model, with confidence and prediction intervals.

lme4's ``predict(fit, newdata, re.form, allow.new.levels = TRUE)`` gives the point
predictions: ``re_form="full"`` adds each row's random effects (a level not seen in the
fit gets 0, i.e. the population value), ``re_form="none"`` is the population level
(``re.form = NA``).  lme4 has no standard errors for them; the intervals here are the usual
normal ones built from the fit (Bolker's GLMM FAQ recipe):

* ``interval="confidence"``: the uncertainty of the fixed part only,
  ``se_fit = sqrt(diag(X V X'))`` with ``V = vcov(beta)``; bounds ``fit ± z se_fit``.
* ``interval="prediction"``: where one new observation of a *new* group would fall:
  ``fit ± z sqrt(se_fit^2 + z_row' Sigma z_row + sigma^2)``, summing ``z_row' Sigma z_row``
  over the random terms (``Sigma`` each term's fitted covariance).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from lmmcore.errors import DataError

__all__ = ["predict"]

_RE_FORMS = ("full", "none")
_INTERVALS = (None, "confidence", "prediction")


def predict(fit, newdata: pd.DataFrame | None = None, re_form: str = "full", interval=None,
            level: float = 0.95):
    """Predictions (a Series) or, with ``interval``, a DataFrame ``fit, se_fit, lwr, upr``.

    Parameters
    ----------
    fit : MixedFit
    newdata : pandas.DataFrame, optional
        Rows to predict; the fitted rows when omitted.  A missing column raises
        :class:`~lmmcore.errors.DataError` naming it.
    re_form : {"full", "none"}
        With or without the random effects.
    interval : {None, "confidence", "prediction"}
    level : float
        Coverage of the interval (normal quantiles).
    """
    if re_form not in _RE_FORMS:
        raise DataError(f"re_form must be 'full' (with the random effects) or 'none' "
                        f"(population level), not {re_form!r}")
    if interval not in _INTERVALS:
        raise DataError(f"interval must be None, 'confidence' or 'prediction', not {interval!r}")
    design = fit.design
    if newdata is None:
        if interval is None and re_form == "full":
            return fit.fitted
        X = np.asarray(design.X, float)
        index = design.row_index
        groups = [(np.asarray(t.codes, np.intp), np.asarray(t.Z_raw, float))
                  for t in design.random_terms]
    else:
        X = np.asarray(design.encoder.fixed_matrix(newdata), float)
        index = newdata.index
        needs_groups = re_form == "full" or interval == "prediction"
        groups = design.encoder.group_codes(newdata) if needs_groups else []
    n = X.shape[0]
    pred = fit.linear_predictor(X, groups if re_form == "full" else None)
    if interval is None:
        return pd.Series(pred, index=index, name="predicted")
    from lmmcore.intervals import _check_level

    level = _check_level(level)
    V = fit.vcov.to_numpy()
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, V, X), 0.0))
    var = se ** 2
    if interval == "prediction":
        s2 = fit.sigma ** 2
        for (codes, Z_raw), lay in zip(groups, fit._cp.layouts):
            Zr = np.asarray(Z_raw, float).reshape(n, -1)
            T = lay.template(fit.theta)
            Sigma = s2 * T @ T.T
            var = var + np.einsum("ij,jk,ik->i", Zr, Sigma, Zr)
        var = var + s2
    z = norm.ppf(0.5 + level / 2.0)
    half = z * np.sqrt(var)
    return pd.DataFrame({"fit": pred, "se_fit": se, "lwr": pred - half, "upr": pred + half},
                        index=index)
