"""Teaching extras the app's pages show: small pure functions over fits and data frames.

Each function here turns a fitted model or a data frame into one number or table a page
displays (ICC, the paired t-test comparison, caterpillar intervals, Q-Q points, the
"reproduce this" code) or prepares a student's table (types, reference levels, wide to
long).  Pages hold no statistics, so anything a page shows that the fitting modules do not
already give lives here.  No streamlit import.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats

from lmmcore.collation import collation_key
from lmmcore.errors import DataError, FitError
from lmmcore.formula import quote_name

__all__ = [
    "column_types", "column_overview", "level_order", "wide_to_long", "guess_roles",
    "quote_name", "icc", "random_sd", "what_to_do", "paired_design", "paired_comparison", "caterpillar",
    "qq_points", "few_observations", "groups_to_highlight", "reproduce_code", "apply_types",
]


# ---------------------------------------------------------------- a student's table

def column_types(data: pd.DataFrame, categorical=(), overrides=None) -> dict:
    """How each column is treated: ``"numeric"`` or ``"categorical"``.

    Parameters
    ----------
    data : DataFrame
    categorical : iterable of str
        Columns categorical by default (a catalogue's grouping columns stored as numbers).
    overrides : mapping, optional
        Column -> ``"numeric"`` / ``"categorical"`` chosen by the student; wins over the rest.

    Returns
    -------
    dict
        Column name -> type, in column order.  Columns that are not numbers are
        categorical unless overridden.
    """
    overrides = dict(overrides or {})
    categorical = set(categorical)
    out = {}
    for col in data.columns:
        if col in overrides and overrides[col] in ("numeric", "categorical"):
            out[col] = overrides[col]
        elif col in categorical:
            out[col] = "categorical"
        elif pd.api.types.is_numeric_dtype(data[col]) and not pd.api.types.is_bool_dtype(data[col]):
            out[col] = "numeric"
        else:
            out[col] = "categorical"
    return out


def _as_number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _as_text(s: pd.Series) -> pd.Series:
    """Values as level labels: whole-number floats (a number column with gaps) lose ".0"."""
    if pd.api.types.is_float_dtype(s) and s.dropna().apply(float.is_integer).all():
        s = s.astype("Int64")
    return s.astype("string").astype(object).where(s.notna(), None)


def level_order(values) -> list:
    """A categorical column's levels in lmmcore's (and R's factor()) order, as text.

    Sorted as numbers when every level is a number, else as text in R's en_US order
    (``a A b B``, :func:`lmmcore.collation.collation_key`); the first level is
    the default reference level.
    """
    levels = _as_text(pd.Series(values)).dropna().unique().tolist()
    nums = [_as_number(v) for v in levels]
    if levels and all(n is not None for n in nums):
        return [v for _, v in sorted(zip(nums, levels))]
    return sorted(levels, key=collation_key)


def column_overview(data: pd.DataFrame, types: dict) -> pd.DataFrame:
    """One row per column: type, missing values, distinct values and a short description.

    Returns
    -------
    DataFrame
        Columns ``column``, ``type``, ``missing``, ``distinct``, ``values`` (range for a
        numeric column, the first levels for a categorical one).
    """
    rows = []
    for col in data.columns:
        s = data[col]
        kind = types.get(col, "categorical")
        if kind == "numeric":
            num = pd.to_numeric(s, errors="coerce")
            values = (f"{num.min():.4g} to {num.max():.4g}" if num.notna().any() else "no numbers")
        else:
            levels = level_order(s)
            values = ", ".join(levels[:6]) + (f", ... ({len(levels)} levels)" if len(levels) > 6 else "")
        rows.append({"column": str(col), "type": kind, "missing": int(s.isna().sum()),
                     "distinct": int(s.nunique(dropna=True)), "values": values})
    return pd.DataFrame(rows, columns=["column", "type", "missing", "distinct", "values"])


def wide_to_long(data: pd.DataFrame, id_column: str, measure_columns, condition_name: str = "condition",
                 value_name: str = "value") -> pd.DataFrame:
    """One row per participant and condition from one row per participant (a "long" table).

    Parameters
    ----------
    data : DataFrame
        One row per participant, one column per condition or time point.
    id_column : str
        The participant (group) column; repeated in the result.
    measure_columns : sequence of str
        The columns that hold the measurements; their names become the condition levels.
    condition_name, value_name : str
        Names of the new condition and value columns.

    Returns
    -------
    DataFrame
        Columns ``id_column``, ``condition_name``, ``value_name``, sorted by participant
        in the original row order, then condition in the order given.

    Raises
    ------
    DataError
        Missing or clashing column names, or fewer than two measure columns.
    """
    measure_columns = list(measure_columns)
    if id_column not in data.columns:
        raise DataError(f"There is no column {id_column!r} to use as the id column.")
    if len(measure_columns) < 2:
        raise DataError("Pick at least two measure columns (one per condition or time point).")
    missing = [c for c in measure_columns if c not in data.columns]
    if missing:
        raise DataError(f"These measure columns are not in the table: {', '.join(map(str, missing))}.")
    if id_column in measure_columns:
        raise DataError("The id column cannot also be a measure column.")
    condition_name, value_name = str(condition_name).strip(), str(value_name).strip()
    if not condition_name or not value_name:
        raise DataError("Give the new condition and value columns a name.")
    if len({id_column, condition_name, value_name}) < 3:
        raise DataError("The id, condition and value columns need three different names.")
    if data[id_column].duplicated().any():
        raise DataError(f"The id column {id_column!r} has repeated values: a wide table has one row"
                        " per participant. Pick the column that identifies participants.")
    wide = data[[id_column] + measure_columns].copy()
    wide["__row"] = np.arange(len(wide))
    long = wide.melt(id_vars=[id_column, "__row"], value_vars=measure_columns,
                     var_name=condition_name, value_name=value_name)
    order = {c: i for i, c in enumerate(measure_columns)}
    long["__cond"] = long[condition_name].map(order)
    long = long.sort_values(["__row", "__cond"], kind="stable").drop(columns=["__row", "__cond"])
    long[condition_name] = long[condition_name].astype(str)
    return long.reset_index(drop=True)


def guess_roles(data: pd.DataFrame, types: dict) -> dict:
    """A starting point for a new table: response, predictor, group and a formula.

    The group is the first categorical column whose levels repeat; the response the last
    numeric column; the predictor another numeric column, if any.  Returns a dict with
    keys ``response``, ``predictor``, ``group`` (each possibly None) and ``formula``
    (``""`` when no sensible model can be guessed).
    """
    n = len(data)
    cats = [c for c, t in types.items() if t == "categorical" and 1 < data[c].nunique() < n]
    nums = [c for c, t in types.items() if t == "numeric" and data[c].nunique() > 1]
    group = cats[0] if cats else None
    response = nums[-1] if nums else None
    others = [c for c in nums if c != response]
    predictor = others[0] if others else None
    formula = ""
    if response and group:
        rhs = quote_name(predictor) if predictor else "1"
        formula = f"{quote_name(response)} ~ {rhs} + (1 | {quote_name(group)})"
    return {"response": response, "predictor": predictor, "group": group, "formula": formula}


# ---------------------------------------------------------------- fitted models

def icc(fit) -> pd.Series | None:
    """Intraclass correlation of each grouping factor of a random-intercept model.

    ICC_g = sigma_g^2 / (sum of all random-intercept variances + sigma^2): the share of
    the variance (given the fixed effects) that lies between levels of g.

    Returns
    -------
    Series or None
        Indexed by grouping factor; None when a random term has a slope (the ICC then
        depends on the predictor's value).
    """
    vc = fit.varcorr
    groups = vc[vc["grp"] != "Residual"]
    if groups.empty:
        return None
    if ((groups["var1"] != "(Intercept)") | groups["var2"].notna()).any():
        return None
    total = float(vc["vcov"].sum())
    if not total > 0:
        return None
    return pd.Series(groups["vcov"].to_numpy() / total, index=groups["grp"].to_numpy(), name="ICC")


def random_sd(fit, group: str) -> pd.Series:
    """The standard deviation of each random coefficient of one grouping factor.

    The ``Std.Dev.`` column of lme4's VarCorr for ``group``, indexed by coefficient
    (``(Intercept)``, ``Days``): how far the groups' coefficients spread around the fixed
    effects, in the data's units.

    Raises
    ------
    FitError
        The model has no random effects for ``group``.
    """
    vc = fit.varcorr
    rows = vc[(vc["grp"] == group) & vc["var2"].isna()]
    if rows.empty:
        raise FitError(f"The model has no random effects for {group!r}.")
    return pd.Series(rows["sdcor"].to_numpy(float), index=rows["var1"].to_numpy(), name="sd")


def what_to_do(fit) -> list[str]:
    """What a student can do about each warning of a fit, in plain words.

    The fit's ``messages`` say what happened (lme4's wording included); these lines say
    what to do next, fitted to the model: a singular fit of random intercepts only is
    different advice from one with a random slope.

    Returns
    -------
    list of str
        One line per problem: dropped (linearly dependent) fixed-effects columns, a
        singular fit, a failed convergence; empty for a clean fit.
    """
    out = []
    design = getattr(fit, "design", None)
    dropped = tuple(getattr(design, "dropped_fixed", ()) or ())
    if dropped:
        out.append("Two or more fixed effects carry the same information (one is a multiple or a sum "
                   f"of others), so {', '.join(dropped)} cannot be estimated. Remove "
                   f"{'it' if len(dropped) == 1 else 'them'} from the formula; the other estimates "
                   "are unaffected.")
    if getattr(fit, "is_singular", False):
        vc = fit.varcorr
        slopes = vc[(vc["grp"] != "Residual") & (vc["var1"] != "(Intercept)")]
        if len(slopes):
            out.append("A random slope's variance is estimated as (almost) zero, or two random effects "
                       "as perfectly correlated. Simplify the random part: drop the random slope, or its "
                       "correlation with `||`; or keep the model and report the zero variance.")
        else:
            out.append("The groups differ no more than chance would make them: their variance is estimated "
                       "as zero, so partial pooling pools completely and the fixed effects equal the lm's. "
                       "Keep the model and report the zero variance (common with few groups), or collect "
                       "more groups.")
    if not getattr(fit, "converged", True):
        out.append("Rescale predictors with large values (e.g. `scale(x)` or days instead of seconds), or "
                   "simplify the random part, then fit again; until then treat the numbers with care.")
    return out


def paired_design(fit, data: pd.DataFrame) -> tuple | None:
    """(response, condition, group) when the fit is the paired-t design, else None.

    The design: one two-level categorical fixed effect, one random intercept for a group,
    and every group observed exactly once in each condition.
    """
    design = getattr(fit, "design", None)
    if design is None or len(design.random_terms) != 1:
        return None
    term = design.random_terms[0]
    if tuple(term.column_names) != ("(Intercept)",) or term.group_name not in data.columns:
        return None
    names = tuple(design.fixed_names)
    if len(names) != 2 or names[0] != "(Intercept)":
        return None
    response, group = design.response_name, term.group_name
    for col in data.columns:
        if col in (response, group):
            continue
        levels = level_order(data[col])
        if len(levels) == 2 and names[1] == f"{col}{levels[1]}":
            cols = data[[response, col, group]].dropna()
            counts = cols.groupby([cols[group].astype(str), cols[col].astype(str)]).size()
            if counts.unstack().notna().all().all() and (counts == 1).all():
                return response, col, group
    return None


def paired_comparison(fit, data: pd.DataFrame) -> dict | None:
    """The lmer t of the condition and the paired t-test's t, for the paired design.

    Returns
    -------
    dict or None
        Keys ``response``, ``condition``, ``group``, ``coefficient`` (R's name),
        ``lmer_t``, ``lmer_estimate``, ``paired_t``, ``mean_difference``, ``df``,
        ``p_value`` (two-sided, paired t); None when the fit is not that design.  The
        two t values agree (Bates: the random-intercept model of two conditions is the
        paired t-test), up to the optimiser's tolerance.
    """
    found = paired_design(fit, data)
    if found is None:
        return None
    response, condition, group = found
    levels = level_order(data[condition])
    d = data[[response, condition, group]].dropna()
    wide = d.assign(**{condition: d[condition].astype(str), group: d[group].astype(str)}).pivot(
        index=group, columns=condition, values=response)
    result = stats.ttest_rel(wide[levels[1]].astype(float), wide[levels[0]].astype(float))
    coef = fit.design.fixed_names[1]
    return {
        "response": response, "condition": condition, "group": group, "coefficient": coef,
        "lmer_t": float(fit.tvalue[coef]), "lmer_estimate": float(fit.fixef[coef]),
        "paired_t": float(result.statistic),
        "mean_difference": float((wide[levels[1]] - wide[levels[0]]).mean()),
        "df": int(len(wide) - 1), "p_value": float(result.pvalue),
    }


def caterpillar(fit, group: str, level: float = 0.95) -> pd.DataFrame:
    """Random effects of one grouping factor with conditional intervals (lme4's dotplot).

    interval = conditional mode +/- z * conditional SD, z the normal quantile for
    ``level`` (lme4's ``dotplot(ranef(fit, condVar = TRUE))`` uses 1.96 for 95%).

    Returns
    -------
    DataFrame
        Columns ``level``, ``term``, ``estimate``, ``sd``, ``lower``, ``upper``; within
        each term, rows sorted by estimate (the caterpillar shape).
    """
    if group not in fit.ranef:
        raise FitError(f"The model has no random effects for {group!r}.")
    est = fit.ranef[group]
    sd = fit.ranef_sd[group]
    z = float(stats.norm.ppf(0.5 + level / 2))
    frames = []
    for term in est.columns:
        f = pd.DataFrame({"level": est.index.astype(str), "term": term,
                          "estimate": est[term].to_numpy(float), "sd": sd[term].to_numpy(float)})
        f["lower"] = f["estimate"] - z * f["sd"]
        f["upper"] = f["estimate"] + z * f["sd"]
        frames.append(f.sort_values("estimate", kind="stable"))
    return pd.concat(frames, ignore_index=True)


def qq_points(residuals) -> dict:
    """Points and reference line of a normal Q-Q plot, as R's ``qqnorm`` / ``qqline``.

    Returns
    -------
    dict
        ``theoretical`` and ``sample`` (arrays, sorted) and ``line`` = (intercept, slope)
        of the line through the first and third quartiles.
    """
    r = np.sort(np.asarray(residuals, dtype=float))
    r = r[np.isfinite(r)]
    n = r.size
    if n < 2:
        raise DataError("A Q-Q plot needs at least two residuals.")
    a = 3 / 8 if n <= 10 else 0.5  # R's ppoints()
    theoretical = stats.norm.ppf((np.arange(1, n + 1) - a) / (n + 1 - 2 * a))
    q1, q3 = np.quantile(r, [0.25, 0.75])  # R's quantile type 7 is numpy's default
    z1, z3 = stats.norm.ppf([0.25, 0.75])
    slope = (q3 - q1) / (z3 - z1)
    return {"theoretical": theoretical, "sample": r, "line": (float(q1 - slope * z1), float(slope))}


def few_observations(n) -> pd.Series:
    """Which groups have few observations: fewer than half the median group size, or < 3.

    Parameters
    ----------
    n : Series
        Observations per group, indexed by group.

    Returns
    -------
    Series of bool, same index.
    """
    n = pd.Series(n).astype(float)
    cut = max(3.0, float(n.median()) / 2) if len(n) else 3.0
    return n < cut


def groups_to_highlight(estimates, n_most: int = 5) -> list:
    """The groups a shrinkage plot should name: those with few observations, and the
    ``n_most`` whose estimate moves most from no to partial pooling.

    Parameters
    ----------
    estimates : lmmcore.pooling.PoolingEstimates
        ``lmmcore.pooling_estimates`` output; "moves most" is its
        :attr:`~lmmcore.pooling.PoolingEstimates.shrinkage` (each coefficient's move
        measured in its spread across the groups' no-pooling estimates).
    n_most : int
        How many of the groups that move most to add.

    Returns
    -------
    list of str
        Group labels, in the estimates' order.
    """
    sizes = estimates.n
    chosen = set(sizes.index[few_observations(sizes).to_numpy()])
    moved = estimates.shrinkage.dropna()
    chosen |= set(moved.sort_values(ascending=False, kind="stable").index[:max(0, n_most)])
    return [g for g in estimates.groups if g in chosen]


# ---------------------------------------------------------------- reproduce this

def _r_str(s) -> str:
    return json.dumps(str(s), ensure_ascii=False)


def reproduce_code(formula: str, file_name: str, reml: bool = True, *, kind: str = "lmer",
                   categorical=(), numeric=(), reference_levels=None, ddf: str | None = None,
                   r2: bool = False) -> tuple[str, str]:
    """R (lme4) and Python (lmmcore) code that refits the current model from its file.

    Parameters
    ----------
    formula : str
        The model formula (lme4 syntax, as lmmcore normalises it).
    file_name : str
        The data file as the student has it (``sleepstudy.csv``).
    reml : bool
    kind : {"lmer", "lm"}
    categorical, numeric : iterable of str
        Columns to treat as factors / numbers.
    reference_levels : mapping, optional
        Column -> reference level.
    ddf : {"satterthwaite", "kenward-roger"}, optional
        Also the lmerTest calls (t-tests and type III anova with these df) and their
        lmmcore counterparts (``coef_table``, ``anova_fixed``).
    r2 : bool
        Also ``performance::r2_nakagawa(fit)`` and ``lmmcore.r2(fit)``.

    Returns
    -------
    (str, str)
        The R code and the Python code.  Every user string is written as a quoted
        literal, so names with quotes or backslashes stay data.
    """
    reference_levels = dict(reference_levels or {})
    categorical = [c for c in categorical]
    numeric = [c for c in numeric]
    lower = str(file_name).lower()
    if lower.endswith(".xlsx"):
        r_read = [f"library(readxl)", f"data <- as.data.frame(read_excel({_r_str(file_name)}))"]
    elif lower.endswith((".tsv", ".txt")):
        r_read = [f"data <- read.delim({_r_str(file_name)})"]
    else:
        r_read = [f"data <- read.csv({_r_str(file_name)})"]
    r = ["library(lme4)" if kind == "lmer" else "# base R: lm()"]
    tests = kind == "lmer" and ddf not in (None, "lme4")
    if tests:
        r.append("library(lmerTest)  # after lme4: its lmer() adds df and p-values")
    if kind == "lmer" and r2:
        r.append("library(performance)")
    r += r_read
    for c in categorical:
        col = f"data[[{_r_str(c)}]]"
        if c in reference_levels:
            r.append(f"{col} <- relevel(factor({col}), ref = {_r_str(reference_levels[c])})")
        else:
            r.append(f"{col} <- factor({col})")
    for c in numeric:
        col = f"data[[{_r_str(c)}]]"
        r.append(f"{col} <- as.numeric({col})")
    if kind == "lmer":
        r.append(f"fit <- lmer({formula}, data = data, REML = {'TRUE' if reml else 'FALSE'})")
    else:
        r.append(f"fit <- lm({formula}, data = data)")
    if tests:
        r_ddf = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger"}[ddf]
        r.append(f'summary(fit, ddf = "{r_ddf}")')
        r.append(f'anova(fit, ddf = "{r_ddf}")  # type III F-tests')
    else:
        r.append("summary(fit)")
    if kind == "lmer" and r2:
        r.append("r2_nakagawa(fit)")

    py = ["import lmmcore", "", f"with open({json.dumps(str(file_name), ensure_ascii=False)}, \"rb\") as f:",
          f"    data = lmmcore.load_table(f.read(), {json.dumps(str(file_name), ensure_ascii=False)})"]
    args = [json.dumps(formula, ensure_ascii=False), "data"]
    if kind == "lmer":
        args.append(f"reml={bool(reml)}")
    if categorical:
        args.append("categorical=" + json.dumps(categorical, ensure_ascii=False))
    if numeric:
        args.append("numeric=" + json.dumps(numeric, ensure_ascii=False))
    if reference_levels:
        args.append("reference_levels=" + json.dumps({str(k): str(v) for k, v in reference_levels.items()},
                                                     ensure_ascii=False))
    py.append(f"fit = lmmcore.{kind}(" + ",\n    ".join(args) + ")")
    py.append("print(fit.summary())")
    if tests:
        py.append(f"print(fit.coef_table(ddf={json.dumps(ddf)}))")
        py.append(f"print(fit.anova_fixed(ddf={json.dumps(ddf)}))")
    if kind == "lmer" and r2:
        py.append("print(lmmcore.r2(fit))")
    return "\n".join(r) + "\n", "\n".join(py) + "\n"


def apply_types(data: pd.DataFrame, types: dict) -> pd.DataFrame:
    """The table with each column as its type says: categorical as text, numeric as numbers.

    Categorical values become strings (``308``, ``1.5``; missing stays missing) so every
    later step sees levels, not numbers.  A column switched to numeric is converted with
    ``pandas.to_numeric``.

    Raises
    ------
    DataError
        A column switched to numeric holds values that are not numbers.
    """
    out = data.copy()
    for col, kind in types.items():
        if col not in out.columns:
            continue
        s = out[col]
        if kind == "categorical":
            out[col] = _as_text(s)
        elif not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            bad = s.notna() & num.isna()
            if bad.any():
                example = s[bad].iloc[0]
                raise DataError(f"Column {col!r} cannot be numeric: it holds {str(example)!r}, which is "
                                "not a number. Switch it back to categorical.")
            out[col] = num.astype(float)
    return out
