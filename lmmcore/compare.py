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
    *fits : MixedFit, LinearFit or GlmmFit
        Two or more models fitted to the same observations (glmer fits only with glmer
        fits of the same family).
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
    families = {getattr(f, "family", "gaussian") for f in fits}
    if len(families) > 1:
        raise LmmError(
            "anova: the models have different response distributions "
            f"({', '.join(sorted(families))}); their log-likelihoods cannot be compared. "
            "Compare glmer fits with glmer fits of the same family.")
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
    table.attrs["nobs"] = n
    return table


# ---------------------------------------------------------------------------
# The lecture's model-comparison recap, worked out (issue 14)

LM_COLUMNS = ["Res.Df", "RSS", "Df", "Sum of Sq", "F", "Pr(>F)"]


def compare_lm(compact, augmented) -> pd.DataFrame:
    """R's ``anova(lm_compact, lm_augmented)`` F test, with the proportional reduction in error.

    Parameters
    ----------
    compact, augmented : LinearFit
        Nested ordinary least-squares fits to the same observations; ``augmented`` has
        more coefficients.

    Returns
    -------
    pandas.DataFrame
        Rows ``1`` and ``2`` (the compact and the augmented model), columns ``Res.Df``,
        ``RSS``, ``Df``, ``Sum of Sq``, ``F``, ``Pr(>F)`` as R's ``anova.lm`` (NaN where R
        prints nothing).  ``attrs``: ``"PRE"`` (``1 - SSE_A / SSE_C``), ``"formulas"``
        and the pieces of the F ratio (``"PA"``, ``"PC"``, ``"n"``).

    Notes
    -----
    With :math:`PA` and :math:`PC` coefficients,
    :math:`F = \\frac{(SSE_C - SSE_A)/(PA - PC)}{SSE_A/(n - PA)}` on :math:`(PA - PC,\\ n - PA)`
    degrees of freedom, and :math:`PRE = 1 - SSE_A/SSE_C`; ``F`` is
    :math:`\\frac{PRE/(PA-PC)}{(1-PRE)/(n-PA)}`.
    """
    for position, fit in enumerate((compact, augmented), start=1):
        if not hasattr(fit, "rss") or getattr(fit.design, "random_terms", ()):
            raise LmmError(f"compare_lm: model {position} is not an lm fit; the F test and PRE "
                           "compare two lm models (use anova() for lmer models).")
    if compact.nobs != augmented.nobs:
        raise LmmError("compare_lm: the two models were fitted to different numbers of "
                       f"observations ({compact.nobs} and {augmented.nobs}).")
    pc, pa = len(compact.fixef), len(augmented.fixef)
    if pa <= pc:
        raise LmmError("compare_lm: the augmented model must have more coefficients than the "
                       f"compact one (it has {pa}, the compact {pc}): give the smaller model first.")
    n = augmented.nobs
    sse_c, sse_a = float(compact.rss), float(augmented.rss)
    df = pa - pc
    sum_sq = sse_c - sse_a
    f_value = (sum_sq / df) / (sse_a / (n - pa)) if n > pa else float("nan")
    p_value = float(stats.f.sf(f_value, df, n - pa)) if n > pa else float("nan")
    table = pd.DataFrame(
        {"Res.Df": [n - pc, n - pa], "RSS": [sse_c, sse_a], "Df": [np.nan, df],
         "Sum of Sq": [np.nan, sum_sq], "F": [np.nan, f_value], "Pr(>F)": [np.nan, p_value]},
        index=pd.Index(["1", "2"], dtype=object))
    table.attrs.update(PRE=1.0 - sse_a / sse_c if sse_c > 0 else float("nan"), PA=pa, PC=pc, n=n,
                       formulas=[str(compact.formula), str(augmented.formula)])
    return table


def information_criteria(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """AIC and BIC of each model of an :func:`anova` table, worked out from their formulas.

    Parameters
    ----------
    table : pandas.DataFrame
        The result of :func:`anova` (ML log-likelihoods: REML fits were refitted).
    n : int
        The number of observations (every model's).

    Returns
    -------
    pandas.DataFrame
        Per model: ``k`` (anova's ``npar``), ``n``, ``logLik`` (ln L-hat), ``AIC``
        :math:`= 2k - 2\\ln\\hat L`, ``BIC`` :math:`= \\ln(n)\\,k - 2\\ln\\hat L`, and
        ``AIC_worked`` / ``BIC_worked``: the formulas with the numbers filled in (LaTeX).
        ``AIC`` and ``BIC`` equal the anova table's columns.
    """
    k = table["npar"].to_numpy(dtype=float)
    loglik = table["logLik"].to_numpy(dtype=float)
    aic = 2.0 * k - 2.0 * loglik
    bic = np.log(n) * k - 2.0 * loglik
    aic_worked = [rf"2 \cdot {ki:g} - 2 \cdot ({li:.2f}) = {a:.2f}" for ki, li, a in zip(k, loglik, aic)]
    bic_worked = [rf"\ln({n}) \cdot {ki:g} - 2 \cdot ({li:.2f}) = {b:.2f}"
                  for ki, li, b in zip(k, loglik, bic)]
    return pd.DataFrame({"k": k.astype(int), "n": n, "logLik": loglik, "AIC": aic, "BIC": bic,
                         "AIC_worked": aic_worked, "BIC_worked": bic_worked}, index=table.index)
