"""Model comparison: lme4's ``anova()`` likelihood-ratio table for nested models.

``anova(fit1, fit2, ...)`` orders the models by their number of parameters and tests each
against the one before with the likelihood-ratio statistic
``Chisq = 2 * (logLik_i - logLik_{i-1})`` on ``Df = npar_i - npar_{i-1}`` degrees of
freedom.  As lme4 (``anovaLmer`` in lme4 1.1-31) does, REML fits are first refitted by
maximum likelihood: REML criteria of models with different fixed effects are not
comparable.  An ``lm`` enters with its maximum-likelihood logLik and ``npar = p + 1``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.errors import LmmError

COLUMNS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


def _check_fit(fit, position: int) -> None:
    for attr in ("loglik", "npar", "nobs", "formula"):
        if not hasattr(fit, attr):
            raise LmmError(
                f"anova: argument {position} is not a fitted model (got {type(fit).__name__}); "
                "pass results of lmmcore.lmer() or lmmcore.lm()."
            )


def anova(*fits, names=None) -> pd.DataFrame:
    """Likelihood-ratio comparison of nested models, as lme4's ``anova()`` prints it.

    Parameters
    ----------
    *fits : MixedFit or LinearFit
        Two or more models fitted to the same observations.
    names : sequence of str, optional
        Row names; default ``"model1"``, ``"model2"``... in the order given.

    Returns
    -------
    pandas.DataFrame
        Indexed by model name, rows ordered by ``npar``, columns ``npar``, ``AIC``,
        ``BIC``, ``logLik``, ``deviance``, ``Chisq``, ``Df``, ``Pr(>Chisq)`` (NaN in the
        first row's test columns, as R's NA).  ``attrs``: ``"notes"`` (e.g. lme4's
        "refitting model(s) with ML (instead of REML)"), ``"data_name"`` and
        ``"formulas"`` (model name -> formula as fitted), used by
        :func:`lmmcore.printing.format_anova`.

    Raises
    ------
    LmmError
        Fewer than two models, duplicate names, or models fitted to different numbers
        of observations.

    Notes
    -----
    ``Chisq = 2 max(0, logLik_i - logLik_{i-1})`` and ``Pr(>Chisq)`` its upper tail
    on ``Df`` degrees of freedom (NaN when ``Df`` is 0), exactly as lme4 computes them.
    """
    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) < 2:
        raise LmmError("anova compares two or more models: fit each model, then pass them all.")
    for i, fit in enumerate(fits, start=1):
        _check_fit(fit, i)
    if names is None:
        names = [f"model{i}" for i in range(1, len(fits) + 1)]
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise LmmError(f"anova: {len(names)} names for {len(fits)} models; give one name per model.")
    if len(set(names)) != len(names):
        raise LmmError("anova: the model names must be different from each other.")
    nobs = [int(f.nobs) for f in fits]
    if len(set(nobs)) > 1:
        detail = ", ".join(f"{n}: {k}" for n, k in zip(names, nobs))
        raise LmmError(
            "models were not all fitted to the same size of dataset "
            f"({detail} observations). Missing values in a column that only one model "
            "uses drop different rows: remove those rows from the data first."
        )
    notes = []
    if any(bool(getattr(f, "reml", False)) for f in fits):
        notes.append(REFIT_NOTE)
        fits = tuple(f.refit(reml=False) if getattr(f, "reml", False) else f for f in fits)

    npar = np.array([float(f.npar) for f in fits])
    order = np.argsort(npar, kind="stable")
    fits = [fits[i] for i in order]
    names = [names[i] for i in order]
    npar = npar[order]
    loglik = np.array([float(f.loglik) for f in fits])
    n = nobs[0]
    deviance = -2.0 * loglik
    aic = deviance + 2.0 * npar
    bic = deviance + np.log(n) * npar
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, stats.chi2.sf(chisq, np.where(df > 0, df, 1)))
    p[0] = np.nan
    table = pd.DataFrame(
        dict(zip(COLUMNS, (npar, aic, bic, loglik, deviance, chisq, df, p))),
        index=pd.Index(names, dtype=object),
    )
    data_names = [getattr(f, "data_name", None) for f in fits]
    table.attrs["notes"] = notes
    table.attrs["data_name"] = next((d for d in data_names if d), "data")
    table.attrs["formulas"] = {nm: str(f.formula) for nm, f in zip(names, fits)}
    return table
