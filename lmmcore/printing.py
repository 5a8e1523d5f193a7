"""Printed layouts: the text of R's and lme4's print methods, line for line.

Students hold lmmcore's printout next to R's console, so each layout reproduces one R
print method.  A layout is one function that stacks shared pieces; a new one (glmer's
summary, lmerTest's) is one more function of the same pieces:

============================  ============================================================
piece                         R source it follows
============================  ============================================================
:func:`title_lines`           lme4's ``.prt.methTit`` (``"... ['lmerMod']"``)
:func:`call_lines`            lme4's ``.prt.call`` (``Formula:`` and ``Data:``)
:func:`criterion_lines`       lme4's ``.prt.aictab`` (REML criterion, or the AIC table)
:func:`residual_lines`        lme4's ``.prt.resids`` (``Scaled residuals:``)
:func:`random_effects_lines`  lme4's ``.prt.VC`` / ``formatVC`` (from ``VarCorr``)
:func:`groups_lines`          lme4's ``.prt.grps`` (``Number of obs: ..., groups: ...``)
:func:`coef_lines`            R's ``printCoefmat`` (``rformat.format_coef_matrix``)
:func:`correlation_lines`     ``print.summary.merMod``'s ``Correlation of Fixed Effects``
:func:`fit_warning_lines`     ``print.summary.merMod``'s ``fit warnings:``
:func:`convergence_lines`     lme4's ``.prt.warn``
============================  ============================================================

Layouts: :func:`lmer_summary` (lme4 1.1-31 ``print(summary(lmer(...)))``),
:func:`lmertest_summary` and :func:`format_anova_fixed` (lmerTest 3.1's summary and type III
``anova`` with Satterthwaite's or Kenward-Roger's df),
:func:`lm_summary` (R's ``print(summary(lm(...)))``) and :func:`format_anova` (lme4's
``print(anova(...))``).  Number formatting itself (``format``, ``format.pval``,
``abbreviate``...) is :mod:`lmmcore.rformat`'s; this module only lays lines out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lmmcore.compare import COLUMNS, LM_COLUMNS
from lmmcore.errors import FormulaError, LmmError
from lmmcore.formula import deparse_call_lines, deparse_lines, parse_formula
from lmmcore.rformat import (
    abbreviate,
    cat_fill,
    format_coef_matrix,
    format_g,
    format_matrix,
    format_named_vector,
    format_numbers,
    format_pvalues,
    format_r_number,
    format_signif,
    print_named,
    r_round,
    zapsmall,
)

__all__ = [
    "lmer_summary", "glmer_summary", "lm_summary", "format_anova", "printed_formula",
    "title_lines", "call_lines", "criterion_lines", "residual_lines",
    "random_effects_lines", "groups_lines", "coef_lines", "correlation_lines",
    "convergence_lines", "fit_warning_lines", "lmertest_summary", "format_anova_fixed",
]

# lme4's summary prints with digits = max(3, getOption("digits") - 3) = 4.
DIGITS = 4
QUANTILE_NAMES = ["Min", "1Q", "Median", "3Q", "Max"]
# print.summary.merMod's lme4.summary.cor.max: larger tables get no correlation block
# (lme4 says so in a message, which is not part of the printout).
COR_MAX = 12


# ---------------------------------------------------------------------------
# Shared pieces


def printed_formula(formula, cutoff: int | None = None) -> list:
    """A formula as lme4 prints it (``formula(fit)``): ``||`` expanded as lme4's
    ``expandDoubleVerts`` does, read from the parsed formula, in R's ``deparse`` lines
    (one line with ``cutoff=None``).

    Text that is not a formula of the grammar (a hand-built design's label) is printed
    as it is.
    """
    try:
        return deparse_lines(parse_formula(formula).expanded_tree, cutoff)
    except FormulaError:
        return [str(formula)]


def title_lines(title: str, class_name: str, width: int = 80) -> list:
    """``.prt.methTit``: e.g. ``"Linear mixed model fit by REML ['lmerMod']"``.

    A title too long for one line (lmerTest's) is ``strwrap``-ed and written with
    ``cat(title, " [", class, "]", sep = "", fill = TRUE)``: a new line begins before a
    piece that would end past the width, and the class loses its quotes.
    """
    import textwrap

    if len(title) + 5 + len(class_name) <= width:
        return [f"{title} ['{class_name}']"]
    pieces = textwrap.wrap(title, width=width - 2, subsequent_indent="  ",
                           break_long_words=False, break_on_hyphens=False)
    lines, current = [], ""
    for piece in pieces + [" [", class_name, "]"]:
        if current and len(current) + len(piece) > width:
            lines.append(current)
            current = ""
        current += piece
    return lines + [current]


def call_lines(formula, data_name: str, expand: bool = True) -> list:
    """``.prt.call``: the ``Formula:`` and ``Data:`` lines (``cat(..., fill = TRUE)`` of
    the formula's ``deparse`` lines, so a long formula continues on indented lines).

    ``expand=False``: the formula as written (lmerTest's call keeps ``(x || g)``).
    """
    if expand:
        formula_lines = printed_formula(formula, cutoff=60)
    else:
        try:
            formula_lines = deparse_lines(parse_formula(formula).node, 60)
        except FormulaError:
            formula_lines = [str(formula)]
    return cat_fill(["Formula:"] + formula_lines) + cat_fill(["   Data:", str(data_name)])


def criterion_lines(fit) -> list:
    """``.prt.aictab``: the REML criterion of a REML fit, else the table AIC, BIC,
    logLik, deviance, df.resid (rounded to one decimal, as lme4 does)."""
    if fit.reml:
        return [f"REML criterion at convergence: {format_r_number(round(fit.objective, 1))}"]
    vals = r_round([fit.aic, fit.bic, fit.loglik, fit.deviance, fit.df_resid], 1)
    txt = format_numbers(vals, 7, na="NaN")
    txt[4] = format_r_number(vals[4])
    return print_named([t.strip() for t in txt], ["AIC", "BIC", "logLik", "deviance", "df.resid"])


def residual_lines(quantiles, digits: int = DIGITS) -> list:
    """``.prt.resids``: the quantiles of the scaled residuals."""
    rq = zapsmall(np.asarray(quantiles, float), digits + 1)
    return ["Scaled residuals: "] + print_named(format_numbers(rq, digits, na="NaN"),
                                                 QUANTILE_NAMES)


def _varcorr_blocks(varcorr: pd.DataFrame) -> list:
    """(group label, names, SDs, correlation matrix) of each block of
    ``as.data.frame(VarCorr(fit))``: one block per random term, then ``Residual``.

    A block is a run of rows of one ``grp``: its variance rows (``var2`` missing), then
    its correlation rows.  The residual row (no ``var1``) is a block of its own, even
    for a grouping factor named "Residual".
    """
    blocks: list = []
    for grp, var1, var2, vcov, sdcor in varcorr[["grp", "var1", "var2", "vcov", "sdcor"]] \
            .itertuples(index=False):
        if pd.isna(var2):
            last = blocks[-1] if blocks else None
            if last is None or last["grp"] != grp or last["cor"] or last["residual"] \
                    or var1 is None:
                blocks.append({"grp": grp, "names": [], "vcov": [], "sd": [], "cor": [],
                               "residual": var1 is None})
            blocks[-1]["names"].append("" if var1 is None else str(var1))
            blocks[-1]["vcov"].append(vcov)
            blocks[-1]["sd"].append(sdcor)
        else:
            blocks[-1]["cor"].append((str(var1), str(var2), sdcor))
    out = []
    for b in blocks:
        sds = np.array(b["sd"], float)
        # the diagonal as cov / (sd sd): NaN for a zero SD, as the covariance matrix gives
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.diag(np.array(b["vcov"], float) / (sds * sds))
        index = {n: i for i, n in enumerate(b["names"])}
        for v1, v2, r in b["cor"]:
            corr[index[v1], index[v2]] = corr[index[v2], index[v1]] = r
        out.append((str(b["grp"]), b["names"], sds, corr))
    return out


def random_effects_lines(varcorr: pd.DataFrame, digits: int = DIGITS) -> list:
    """``.prt.VC``: ``Random effects:`` and the Groups / Name / Variance / Std.Dev. /
    Corr table of ``as.data.frame(VarCorr(fit))`` (:attr:`MixedFit.varcorr`).

    Prints whatever blocks ``varcorr`` has: a ``Residual`` row only if it has one (glmer's
    binomial and Poisson fits have none).
    """
    groups, names, sds, corrs = [], [], [], []
    for grp, block_names, block_sds, corr in _varcorr_blocks(varcorr):
        for a, name in enumerate(block_names):
            groups.append(grp if a == 0 else "")
            names.append(name)
        sds.extend(block_sds)
        corrs.append(corr)
    sds = np.array(sds)
    cols = ["Groups", "Name", "Variance", "Std.Dev."]
    var_txt = format_numbers(sds ** 2, digits, na="NaN")
    sd_txt = format_numbers(sds, digits, na="NaN")
    cells = [[g, n, v, s] for g, n, v, s in zip(groups, names, var_txt, sd_txt)]
    maxlen = max(c.shape[0] for c in corrs)
    if maxlen > 1:
        dig = max(2, digits - 2)
        crow = []
        for c in corrs:
            k = c.shape[0]
            flat = format_numbers(r_round(c, dig).ravel(), 7, na="NaN", nsmall=dig)
            cc = np.array(flat, dtype=object).reshape(k, k)
            for a in range(k):
                crow.append([cc[a, b] if a > b else "" for b in range(maxlen - 1)])
        cols = cols + ["Corr"] + [""] * (maxlen - 2)
        cells = [a + b for a, b in zip(cells, crow)]
    return ["Random effects:"] + format_matrix(cells, [""] * len(cells), cols, right=False)


def groups_lines(nobs: int, ngroups: dict) -> list:
    """``.prt.grps``: ``Number of obs: 180, groups:  Subject, 18``."""
    groups = "; ".join(f"{g}, {m}" for g, m in ngroups.items())
    return cat_fill([f"Number of obs: {nobs}, groups: ", groups])


def coef_lines(values, row_names, col_names, digits: int = DIGITS, **printcoefmat) -> list:
    """A coefficient table by R's ``printCoefmat`` (``printcoefmat``: its arguments
    ``cs_ind``, ``tst_ind``, ``has_pvalue``... as :func:`lmmcore.rformat.format_coef_matrix`)."""
    return format_coef_matrix(values, list(row_names), list(col_names), digits=digits,
                              **printcoefmat)


def correlation_lines(corr, names) -> list:
    """``Correlation of Fixed Effects:``: the lower triangle rounded to 3 decimals, rows
    and columns named by R's ``abbreviate`` (11 and 6 characters); none for p = 1 or
    p > 12."""
    C = np.asarray(corr, float)
    p = C.shape[0]
    if not 1 < p <= COR_MAX:
        return []
    rn = [abbreviate(n, 11) for n in names]
    cn = [abbreviate(n, 6) for n in names]
    flat = format_numbers(r_round(C, 3).ravel(), 7, na="NaN", nsmall=3)
    cc = np.array(flat, dtype=object).reshape(p, p)
    cells = [[cc[i, j] if i > j else "" for j in range(p - 1)] for i in range(1, p)]
    return ["", "Correlation of Fixed Effects:"] + format_matrix(cells, rn[1:], cn[:-1],
                                                                 right=False)


def fit_warning_lines(messages) -> list:
    """``print.summary.merMod``'s ``fit warnings:`` (lme4's fit messages, e.g. the
    rank-deficient fixed-effects matrix), printed only when there are some."""
    messages = [m for m in messages if m]
    return ["fit warnings:"] + messages if messages else []


def convergence_lines(optimizer: str, converged: bool, message: str, warnings) -> list:
    """``.prt.warn``: the optimizer's code and lme4's warnings, printed only when there
    is something to say."""
    warnings = list(warnings)
    if not warnings and converged:
        return []
    code = 0 if converged else 1
    state = "(OK)" if converged else f"({message})"
    return [f"optimizer ({optimizer}) convergence code: {code} {state}"] + warnings + [""]


# ---------------------------------------------------------------------------
# Layouts


def lmer_summary(fit) -> str:
    """The text of lme4 1.1-31's ``print(summary(fit))`` for an lmer fit.

    Parameters
    ----------
    fit : lmmcore.mixed.MixedFit

    Returns
    -------
    str
        Every line as lme4 prints it, except that the optimizer is named BFGS (ours)
        instead of nloptwrap.
    """
    def fixed_table() -> list:
        table = np.column_stack([fit.fixef.to_numpy(), fit.se.to_numpy(),
                                 fit.tvalue.to_numpy()])
        return coef_lines(table, fit.fixed_names, ["Estimate", "Std. Error", "t value"],
                          cs_ind=(0, 1), tst_ind=(2,), has_pvalue=False)

    return _mermod_summary(fit, _lmer_title(fit), "lmerMod", True, fixed_table)


def _lmer_title(fit) -> str:
    return ("Linear mixed model fit by REML" if fit.reml
            else "Linear mixed model fit by maximum likelihood ")


def _mermod_summary(fit, title: str, class_name: str, expand_formula: bool, fixed_table) -> str:
    """lme4's ``print.summary.merMod`` with a given title and fixed-effects table
    (``fixed_table()``: its printed lines), shared by lme4's and lmerTest's summaries."""
    lines = (title_lines(title, class_name)
             + call_lines(fit.formula, fit.data_name, expand=expand_formula) + [""])
    lines += criterion_lines(fit) + [""]
    lines += residual_lines(fit.scaled_resid_quantiles.to_numpy()) + [""]
    lines += random_effects_lines(fit.varcorr)
    lines += groups_lines(fit.nobs, fit.ngroups)
    names = fit.fixed_names
    if names:
        lines += ["", "Fixed effects:"] + fixed_table()
        lines += correlation_lines(fit.corr_fixef.to_numpy(), names)
    lines += _warning_lines(fit)
    return "\n".join(lines) + "\n"


def _warning_lines(fit) -> list:
    """The fit warnings and ``.prt.warn``, as both lmer summaries end."""
    fit_msgs = [m for m in fit.lme4_messages if m.startswith("fixed-effect model matrix")]
    warnings = [m for m in fit.lme4_messages if not m.startswith("fixed-effect model matrix")]
    return fit_warning_lines(fit_msgs) + convergence_lines(
        "BFGS", fit.optimizer.converged, fit.optimizer.message, warnings)


#: lmerTest's names of the df methods (its titles and anova headings).
DDF_NAMES = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}
ANOVA_FIXED_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
COEF_DF_COLUMNS = ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]


def lmertest_summary(fit, ddf: str = "satterthwaite") -> str:
    """The text of lmerTest 3.1's ``print(summary(fit, ddf = ...))``.

    lme4's layout with lmerTest's title (``t-tests use Satterthwaite's method
    [lmerModLmerTest]``), the formula as written, and the coefficient table with ``df`` and
    ``Pr(>|t|)`` (``printCoefmat``: df formatted with the estimates; stars and legend).
    ``ddf`` is ``"satterthwaite"`` or ``"kenward-roger"`` (:meth:`MixedFit.coef_table`).
    """
    title = _lmer_title(fit) + f". t-tests use {DDF_NAMES[ddf]} method"

    def fixed_table() -> list:
        table = fit.coef_table(ddf)[COEF_DF_COLUMNS].to_numpy(float)
        return coef_lines(table, fit.fixed_names, COEF_DF_COLUMNS, cs_ind=(0, 1, 2),
                          tst_ind=(3,), has_pvalue=True)

    return _mermod_summary(fit, title, "lmerModLmerTest", False, fixed_table)


def format_anova_fixed(table: pd.DataFrame, ddf: str = "satterthwaite") -> str:
    """lmerTest's ``print(anova(fit, ddf = ...))`` of :meth:`MixedFit.anova_fixed`'s table:
    its heading, then R's ``print.anova`` (``printCoefmat``, 5 digits, the F value as the
    test statistic, blanks for a term it could not test)."""
    heading = f"Type III Analysis of Variance Table with {DDF_NAMES[ddf]} method"
    if not len(table):
        # R prints an empty table's header after a 4-wide row-name column
        return heading + "\n    " + "".join(" " + c for c in ANOVA_FIXED_COLUMNS) + "\n"
    lines = [heading] + format_coef_matrix(
        table[ANOVA_FIXED_COLUMNS].to_numpy(float), [str(i) for i in table.index],
        ANOVA_FIXED_COLUMNS, digits=5, cs_ind=(), tst_ind=(4,), zap_ind=(0, 1, 2, 3),
        has_pvalue=True, na_print="")
    return "\n".join(lines) + "\n"


def glmer_summary(fit) -> str:
    """The text of lme4 1.1-31's ``print(summary(fit))`` for a glmer fit.

    Parameters
    ----------
    fit : lmmcore.generalized.GlmmFit

    Returns
    -------
    str
        Every line as lme4 prints it; the optimizer, if a convergence line is printed,
        is named L-BFGS-B (ours) instead of Nelder_Mead.
    """
    method = ("Laplace Approximation" if fit.nAGQ == 1 else
              f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nAGQ}")
    first, rest = method.split(" ", 1)
    lines = [f"Generalized linear mixed model fit by maximum likelihood ({first}",
             f"  {rest}) [glmerMod]", f" Family: {fit.family}  ( {fit.link} )"]
    lines += call_lines(fit.formula, fit.data_name) + [""]
    # the deviance column is -2 logLik (lme4's llikAIC), not deviance(fit)
    vals = r_round([fit.aic, fit.bic, fit.loglik, fit.objective, fit.df_resid], 1)
    txt = format_numbers(vals, 7, na="NaN")
    txt[4] = format_r_number(vals[4])
    lines += print_named([t.strip() for t in txt], ["AIC", "BIC", "logLik", "deviance",
                                                     "df.resid"]) + [""]
    lines += residual_lines(fit.scaled_resid_quantiles.to_numpy()) + [""]
    lines += random_effects_lines(fit.varcorr)
    lines += groups_lines(fit.nobs, fit.ngroups)
    names = fit.fixed_names
    if names:
        table = fit.coef_table()
        lines += ["", "Fixed effects:"]
        lines += coef_lines(table.to_numpy(), names, list(table.columns), cs_ind=(0, 1),
                            tst_ind=(2,), has_pvalue=True)
        lines += correlation_lines(fit.corr_fixef.to_numpy(), names)
    warnings = [m for m in fit.lme4_messages if not m.startswith("fixed-effect model matrix")]
    lines += convergence_lines("L-BFGS-B", True, "", warnings)
    return "\n".join(lines) + "\n"


def lm_summary(fit) -> str:
    """The text of R's ``print(summary(lm(formula, data)))``.

    Parameters
    ----------
    fit : lmmcore.linear.LinearFit
    """
    digits = DIGITS     # summary.lm's max(3, getOption("digits") - 3)
    try:
        formula = parse_formula(fit.formula).node
    except FormulaError:
        formula = str(fit.formula)
    lines = ["", "Call:"] + deparse_call_lines(
        "lm", [("formula", formula), ("data", fit.data_name)], cutoff=60) + ["", "Residuals:"]
    residuals = fit.residuals
    resid = residuals.to_numpy()
    rdf = fit.df_resid
    if rdf > 5:
        q = zapsmall(np.quantile(resid, [0, 0.25, 0.5, 0.75, 1.0]), digits + 1)
        lines += format_named_vector(q, QUANTILE_NAMES, digits)
    elif rdf > 0:
        names = [str(i + 1) if isinstance(i, (int, np.integer)) else str(i)
                 for i in residuals.index]
        lines += format_named_vector(resid, names, digits)
    else:
        lines.append(f"ALL {fit.nobs} residuals are 0: no residual degrees of freedom!")
    dropped = list(fit.design.dropped_fixed)
    if dropped:
        lines += ["", f"Coefficients: ({len(dropped)} not defined because of singularities)"]
    else:
        lines += ["", "Coefficients:"]
    table = fit.coef_table()
    rows = list(table.index)
    values = table.to_numpy()
    if dropped:
        values = np.vstack([values, np.full((len(dropped), 4), np.nan)])
        rows += dropped
    lines += coef_lines(values, rows, ["Estimate", "Std. Error", "t value", "Pr(>|t|)"],
                        digits, cs_ind=(0, 1), tst_ind=(2,), has_pvalue=True, na_print="NA")
    lines += ["", f"Residual standard error: {format_signif(fit.sigma, digits)} on {rdf} "
              "degrees of freedom"]
    if fit.design.n_dropped_na:
        k = fit.design.n_dropped_na
        lines.append(f"  ({k} observation{'s' if k != 1 else ''} deleted due to missingness)")
    if not math.isnan(fit.fvalue):
        lines.append(f"Multiple R-squared:  {format_g(fit.rsquared, digits)},\t"
                     f"Adjusted R-squared:  {format_g(fit.rsquared_adj, digits)} ")
        lines.append(f"F-statistic: {format_g(fit.fvalue, digits)} on "
                     f"{format_r_number(fit.f_df[0])} and {format_r_number(fit.f_df[1])} DF,  "
                     f"p-value: {format_pvalues([fit.f_pvalue], digits)[0]}")
    lines.append("")
    return "\n".join(lines) + "\n"


def format_anova(table: pd.DataFrame, width: int = 80) -> str:
    """Print an :func:`lmmcore.anova` table as lme4 does (``print.anova`` / ``printCoefmat``).

    Parameters
    ----------
    table : pandas.DataFrame
        The result of :func:`lmmcore.anova` (its ``attrs`` give the "Data:" and "Models:"
        lines).

    Returns
    -------
    str
        "Data: ..." and "Models:" lines, one "name: formula" line per model (the formula
        as lme4 stores it: ``||`` expanded, see :func:`printed_formula`), the table
        with R's number formatting and significance stars, and the "Signif. codes"
        legend when stars are shown.  lme4's refit message is not part of the printout
        (R sends it as a message): read it from ``table.attrs["notes"]``.
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise LmmError(f"format_anova needs the table from lmmcore.anova(); missing columns: {missing}")
    formulas = table.attrs.get("formulas", {})
    lines = [f"Data: {table.attrs.get('data_name', 'data')}", "Models:"]
    for name in table.index:
        lines.append(f"{name}: {printed_formula(formulas.get(name, ''))[0]}")
    lines += coef_lines(
        table[COLUMNS].to_numpy(dtype=float),
        [str(i) for i in table.index],
        COLUMNS,
        digits=5,
        cs_ind=(),
        tst_ind=(5,),
        zap_ind=(0, 1, 2, 3, 4),
        has_pvalue=True,
        na_print="",
        width=width,
    )
    return "\n".join(lines) + "\n"


def format_lm_comparison(table: pd.DataFrame, width: int = 80) -> str:
    """Print :func:`compare_lm`'s table as R prints ``anova(lm_c, lm_a)`` (``print.anova``: F
    is the test statistic, the Df columns and F are not zapped)."""
    lines = ["Analysis of Variance Table", ""]
    lines += [f"Model {i}: {f}" for i, f in enumerate(table.attrs.get("formulas", []), start=1)]
    lines += format_coef_matrix(table[LM_COLUMNS].to_numpy(dtype=float),
                                [str(i) for i in table.index], LM_COLUMNS, digits=5,
                                cs_ind=(), tst_ind=(4,), zap_ind=(1, 3),
                                has_pvalue=True, na_print="", width=width)
    return "\n".join(lines) + "\n"
