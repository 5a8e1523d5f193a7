"""Model matrices: a parsed formula and a data frame become a :class:`MixedDesign`.

This is lme4's ``lFormula()`` step: drop rows with missing values (``na.omit``), code
categorical columns with treatment contrasts as R's ``model.matrix()`` does (same column
names, same rule for a factor whose margin is absent from an interaction), drop
rank-deficient fixed-effects columns as lme4's ``chkRank.drop.cols`` does, and build each
random term's raw model matrix and grouping factor in lme4's order.  Everything is
vectorised numpy/pandas; no n x n matrix is ever formed.

The :class:`DesignEncoder` built alongside re-applies the same encoding (levels,
reference levels, ``scale()``/``center()`` constants, dropped columns) to new data.
"""

from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd

from lmmcore.collation import collation_key
from lmmcore.errors import DataError, FitError, FormulaError
from lmmcore.formula import (ARITHMETIC, TRANSFORMS, Formula, ModelTerms, Node, cbind_parts,
                             format_number, parse_formula)
from lmmcore.structure import MixedDesign, RandomTerm

__all__ = ["build_design", "DesignEncoder", "RANK_TOLERANCE", "MAX_FIXED_COLUMNS"]

# lme4's chkRank.drop.cols default (lmerControl(check.rankX = "message+drop.cols")).
RANK_TOLERANCE = 1e-7
# Guards against formulas whose matrices would exhaust memory (e.g. s:d in InstEval).
MAX_FIXED_COLUMNS = 2000
MAX_MATRIX_CELLS = 50_000_000

_NUMBER_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


# ---------------------------------------------------------------------------
# Factor levels


def _level_label(value) -> str:
    """A value's level label as R prints it (``308`` not ``308.0``, ``TRUE``)."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_number(float(value))
    return str(value)


def _number_labels(values: np.ndarray) -> list:
    """Labels of sorted numbers, vectorised for the common case of whole numbers."""
    if values.dtype.kind in "iu":
        return values.astype(str).tolist()
    if values.size and np.all(np.abs(values) < 1e15) and np.all(values == np.round(values)):
        return values.astype(np.int64).astype(str).tolist()
    return [_level_label(u) for u in values]


def _sorted_factorize(values: np.ndarray) -> tuple:
    """(codes, sorted uniques) by hashing then sorting the uniques: O(n), not O(n log n)."""
    codes, uniques = pd.factorize(values, sort=False)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order]


def _sorted_labels(labels) -> list:
    """Sort as numbers when every label is a number ("2" < "10"), else as text the way
    R's ``sort()`` does in an en_US.UTF-8 session (``a A b B``, see lmmcore.collation)."""
    if all(_NUMBER_TEXT.match(lab) for lab in labels):
        return sorted(labels, key=lambda lab: (float(lab), lab))
    joined = "".join(labels)
    if joined.isascii() and joined.isalnum() and (joined.islower() or joined.isupper()):
        # ASCII digits and letters of one case ("g0042", "S12"): ICU's order is then the
        # code points' (digits before letters, one character at a time), and the
        # collation key, Python per character, cost 12 ms on 2,000 such labels
        return sorted(labels)
    return sorted(labels, key=collation_key)


def _factorize(series: pd.Series) -> tuple:
    """(codes, labels) of a column as a factor; code -1 for a missing value.

    ``labels`` is in R's level order: sorted as numbers or as text, or a pandas
    categorical's own category order.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.intp)
        labels = [_level_label(c) for c in series.cat.categories]
        return _merge_labels(codes, labels, keep_order=True)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        # ISO text sorts chronologically; dates without a time print as R prints them
        midnight = (series.dropna().dt.normalize() == series.dropna()).all()
        series = series.dt.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S")
    # a numpy-backed column is factorized as its array: the same codes, without the
    # Series wrapper's checks (a third of the time on class-size data)
    values = series.to_numpy() if isinstance(series.dtype, np.dtype) else series
    codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=True)
    codes = codes.astype(np.intp, copy=False)
    uniques = np.asarray(uniques)
    if uniques.dtype.kind in "iuf":
        # numbers: sort numerically, no text round trip
        order = np.argsort(uniques, kind="stable")
        rank = np.empty(len(order), dtype=np.intp)
        rank[order] = np.arange(len(order))
        labels = _number_labels(uniques[order])
        codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
        return _merge_labels(codes, labels, keep_order=True)
    if uniques.dtype.kind == "b":
        labels = [_level_label(u) for u in uniques]
        return _merge_labels(codes, labels, keep_order=False)
    if pd.api.types.is_string_dtype(series.dtype) and uniques.dtype == object:
        labels = uniques.tolist()
        if all(type(u) is str for u in labels):       # text is its own label (fast path)
            return _merge_labels(codes, labels, keep_order=False)
    return _merge_labels(codes, [_level_label(u) for u in uniques], keep_order=False)


def _merge_labels(codes: np.ndarray, labels: list, keep_order: bool) -> tuple:
    """Merge values with the same label (1 and "1") and put labels in level order."""
    unique = list(dict.fromkeys(labels))
    if not keep_order:
        unique = _sorted_labels(unique)
    if unique == labels:
        return codes, labels
    position = {lab: i for i, lab in enumerate(unique)}
    remap = np.array([position[lab] for lab in labels] + [-1], dtype=np.intp)
    return remap[codes], unique


def _drop_unused(codes: np.ndarray, labels: list) -> tuple:
    """lme4 builds its model frame with drop.unused.levels = TRUE."""
    used = np.bincount(codes, minlength=len(labels)) > 0
    if used.all():
        return codes, list(labels)
    remap = np.cumsum(used) - 1
    return remap[codes], [lab for lab, u in zip(labels, used) if u]


# ---------------------------------------------------------------------------
# Arithmetic transforms (lmmcore.formula.TRANSFORMS: names and implementations)


def _evaluate(expr: Node, column, constants: dict, fitting: bool, owner: str) -> np.ndarray:
    """Evaluate a numeric variable's tree; ``column(name, owner)`` gives a float array.

    Transforms with learned constants (``scale``, ``center``) store them in
    ``constants`` under the call's text when ``fitting`` and reuse them otherwise.
    """
    kind = expr.kind
    if kind == "name":
        return column(expr.value, owner)
    if kind == "num":
        return np.float64(expr.value)
    if kind == "paren" or (kind == "unary" and expr.value == "+"):
        return _evaluate(expr.args[0], column, constants, fitting, owner)
    if kind == "unary":
        return -_evaluate(expr.args[0], column, constants, fitting, owner)
    args = []
    for arg in expr.args:       # a loop, not a comprehension: one stack frame per level
        args.append(_evaluate(arg, column, constants, fitting, owner))
    with np.errstate(all="ignore"):
        if kind == "binary":
            return ARITHMETIC[expr.value](*args)
        transform = TRANSFORMS[expr.value]
        if transform.learn is None:
            return transform.apply(*args)
        key = str(expr)
        if fitting:
            shift, divisor = transform.learn(*args)
            if not divisor > 0:
                raise DataError(f"{key} cannot be computed: the values have no spread "
                                "(standard deviation 0); use the column without "
                                f"{transform.name}()")
            constants[key] = (shift, divisor)
        shift, divisor = constants[key]
        return (args[0] - shift) / divisor


# ---------------------------------------------------------------------------
# R's model.matrix column coding


def _coding_plan(mterms: ModelTerms, is_factor) -> list:
    """For each term, for each variable: None (numeric), "contr" or "full" coding.

    R's rule (TermCode in model.c): a factor in a term is coded by contrasts when the
    term without it is empty or contained in an earlier term, else by indicators of
    all its levels; without an intercept the first factor of the first term that has
    one gets all its levels.
    """
    plan = []
    previous: list = []
    for term in mterms.terms:
        names = frozenset(v.label for v in term.variables)
        codes = []
        for v in term.variables:
            if not is_factor(v):
                codes.append(None)
                continue
            margin = names - {v.label}
            contr = not margin or any(margin <= p for p in previous)
            codes.append("contr" if contr else "full")
        plan.append(codes)
        previous.append(names)
    if not mterms.intercept:
        for codes, term in zip(plan, mterms.terms):
            hit = [i for i, c in enumerate(codes) if c is not None]
            if hit:
                codes[hit[0]] = "full"
                break
    return plan


def _term_size(term, codes, values) -> int:
    size = 1
    for v, c in zip(term.variables, codes):
        if c is None:
            continue
        levels = values[v.label][1]
        size *= len(levels) - (1 if c == "contr" else 0)
    return size


def _model_matrix(mterms: ModelTerms, plan: list, values: dict, n: int) -> tuple:
    """(matrix, column names) of a ModelTerms with its coding plan."""
    blocks, names = [], []
    if mterms.intercept:
        blocks.append(np.ones((n, 1)))
        names.append("(Intercept)")
    for term, codes in zip(mterms.terms, plan):
        block = np.ones((n, 1))
        bnames = [""]
        for v, c in zip(term.variables, codes):
            if c is None:
                vmat = values[v.label][:, None]
                vnames = [v.label]
            else:
                vcodes, levels = values[v.label]
                first = 1 if c == "contr" else 0
                vmat = np.zeros((n, len(levels)))
                ok = vcodes >= 0
                vmat[np.flatnonzero(ok), vcodes[ok]] = 1.0
                vmat = vmat[:, first:]
                vnames = [v.label + lab for lab in levels[first:]]
            # R's column order: the first variable of a term varies fastest
            block = (block[:, None, :] * vmat[:, :, None]).reshape(n, -1)
            bnames = [f"{a}:{b}" if a else b for b in vnames for a in bnames]
        blocks.append(block)
        names.extend(bnames)
    if not blocks:
        return np.empty((n, 0)), []
    return np.hstack(blocks) if len(blocks) > 1 else blocks[0], names


def _rank_keep(X: np.ndarray, tol: float = RANK_TOLERANCE) -> np.ndarray:
    """Indices of the columns lme4 keeps: left to right, a column whose residual on the
    columns kept so far is below ``tol`` times its own norm is dropped (LINPACK dqrdc2's
    limited pivoting, which R's qr() and lme4's chkRank.drop.cols use)."""
    p = X.shape[1]
    if p == 0:
        return np.arange(0)
    # Q is orthogonal, so the small triangular factor has X's column geometry.
    R = np.linalg.qr(X, mode="r") if X.shape[0] > p else X
    norms = np.linalg.norm(R, axis=0)
    if X.shape[0] > p and np.all(np.abs(np.diagonal(R)) >= tol * norms) and np.all(norms > 0):
        # R's diagonal holds each column's residual on the columns before it: none is
        # below the tolerance, so the loop below would keep every column
        return np.arange(p)
    basis = np.empty((R.shape[0], 0))
    keep = []
    for j in range(p):
        col = R[:, j]
        resid = col - basis @ (basis.T @ col)
        resid = resid - basis @ (basis.T @ resid)
        r = np.linalg.norm(resid)
        if norms[j] > 0 and r >= tol * norms[j]:
            keep.append(j)
            basis = np.column_stack([basis, resid / r])
    return np.asarray(keep, dtype=np.intp)


# ---------------------------------------------------------------------------
# Reading the data


class _Columns:
    """Access to the data's columns, numeric or as factors, on all rows."""

    def __init__(self, formula: Formula, data: pd.DataFrame, kinds: dict,
                 series: dict | None = None):
        self.formula = formula
        self.data = data
        self.kinds = kinds
        self._numeric: dict = {}
        self._factor: dict = {}
        self._series: dict = dict(series or {})

    def series(self, name: str) -> pd.Series:
        got = self._series.get(name)
        if got is None:
            got = self._series[name] = self.data[name]
        return got

    def numeric(self, name: str, owner: str) -> np.ndarray:
        got = self._numeric.get(name)
        if got is None:
            if self.kinds[name] != "numeric":
                raise DataError(
                    f"{owner} needs numbers, but column '{name}' is categorical; use a "
                    f"numeric column, or mark '{name}' as numeric if its values are numbers")
            got = _to_float(self.series(name), name)
            self._numeric[name] = got
        return got

    def factor(self, name: str) -> tuple:
        got = self._factor.get(name)
        if got is None:
            got = _factorize(self.series(name))
            self._factor[name] = got
        return got

    def missing(self, name: str) -> np.ndarray:
        if self.kinds[name] == "numeric":
            values = self.numeric(name, name)
            return np.isnan(values)
        return self.factor(name)[0] < 0


def _to_float(series: pd.Series, name: str) -> np.ndarray:
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iuf":
        # numpy numbers: NaN already marks a missing float, an integer column has none
        return series.to_numpy().astype(np.float64)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna().to_numpy() & ~series.isna().to_numpy()
    if bad.any():
        example = series[bad].iloc[0]
        raise DataError(f"column '{name}' was marked numeric but has the value {example!r}, "
                        f"which is not a number; fix the value or treat '{name}' as "
                        "categorical")
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _column_kinds(formula: Formula, data: pd.DataFrame, categorical, numeric,
                  series: dict) -> dict:
    """``{column: "numeric" | "categorical"}`` for the formula's columns; ``series``
    holds those columns, fetched once (each ``data[name]`` builds a new Series)."""
    categorical = set(categorical or ())
    numeric = set(numeric or ())
    for name in sorted(categorical | numeric):
        if name not in data.columns:
            raise DataError(f"'{name}' was marked numeric or categorical but is not a column "
                            f"of the data; columns are: {_list_columns(data.columns)}")
    both = categorical & numeric
    if both:
        raise DataError(f"column(s) {', '.join(sorted(both))} marked both numeric and "
                        "categorical: choose one")
    kinds = {}
    for name in formula.columns:
        dtype = series[name].dtype
        if name in categorical:
            kinds[name] = "categorical"
        elif name in numeric:
            kinds[name] = "numeric"
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            kinds[name] = "numeric"
        else:
            kinds[name] = "categorical"
    return kinds


def _list_columns(columns, limit: int = 25) -> str:
    cols = [str(c) for c in columns]
    text = ", ".join(cols[:limit])
    return text + (f", ... ({len(cols)} columns)" if len(cols) > limit else "")


def _check_columns(formula: Formula, data: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"the data must be a table (pandas DataFrame), not "
                        f"{type(data).__name__}")
    if data.columns.has_duplicates:
        dup = data.columns[data.columns.duplicated()].unique()
        raise DataError(f"the data have more than one column named {', '.join(map(str, dup))}; "
                        "rename them so each name is unique")
    if not all(isinstance(c, str) for c in data.columns):
        data = data.rename(columns=str)
    for name in formula.columns:
        if name not in data.columns:
            close = difflib.get_close_matches(name, [str(c) for c in data.columns], n=3,
                                              cutoff=0.6)
            lower = [c for c in data.columns if c.lower() == name.lower() and c not in close]
            close = lower + close
            hint = (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "")
            pos = formula.positions.get(name)
            where = f" (at character {pos + 1})" if pos is not None else ""
            raise FormulaError(f"there is no column '{name}' in the data{where}; {hint}"
                               f"columns are: {_list_columns(data.columns)}", pos, formula.text)
    return data


# ---------------------------------------------------------------------------
# Variables on the model's rows


def _variable_values(variables, cols: _Columns, keep: np.ndarray, constants: dict,
                     fitting: bool, levels: dict, reference_levels: dict) -> dict:
    """label -> float array (numeric) or (codes, levels) (factor), on the kept rows."""
    values = {}
    for v in variables:
        if v.label in values:
            continue
        if v.kind == "numeric" or (v.kind == "column" and cols.kinds[v.column] == "numeric"):
            full = _evaluate(v.expr, cols.numeric, constants, fitting, v.label)
            arr = np.broadcast_to(full, (keep.shape[0],))[keep]
            bad = ~np.isfinite(arr)
            if bad.any() and v.kind == "column":
                raise DataError(f"column '{v.column}' has {int(bad.sum())} infinite value(s); "
                                "fix them or remove those rows")
            if bad.any():
                col = ", ".join(f"'{c}'" for c in v.columns)
                raise DataError(
                    f"{v.label} is not a finite number for {int(bad.sum())} row(s) (column "
                    f"{col}), e.g. the log or square root of 0 or of a negative value; "
                    "choose another transform or remove those rows")
            values[v.label] = np.ascontiguousarray(arr, dtype=np.float64)
            continue
        codes, labels = cols.factor(v.column)
        codes = codes[keep]
        if fitting:
            codes, labs = _drop_unused(codes, labels)
            ref = reference_levels.get(v.label, reference_levels.get(v.column))
            if ref is not None:
                ref = _level_label(ref)
                if ref not in labs:
                    raise DataError(f"the reference level {ref!r} is not a level of "
                                    f"'{v.column}' in the rows used; levels are: "
                                    f"{', '.join(labs[:30])}")
                new = [ref] + [lab for lab in labs if lab != ref]
                codes = pd.Index(new).get_indexer(labs)[codes]
                labs = new
            if len(labs) < 2:
                raise DataError(
                    f"'{v.label}' has only one value ({labs[0]!r}) in the rows used, so it "
                    "cannot be a predictor: remove it from the formula or check the data")
            levels[v.label] = tuple(labs)
        else:
            codes = _recode(codes, labels, levels[v.label], v.label)
        values[v.label] = (codes, list(levels[v.label]))
    return values


def _recode(codes: np.ndarray, labels: list, fitted_levels: tuple, what: str) -> np.ndarray:
    """Map new data's codes (over ``labels``) onto the fitted levels; unseen -> error."""
    lookup = pd.Index(fitted_levels).get_indexer(pd.Index(labels))
    new = lookup[codes] if len(lookup) else np.full(codes.shape, -1)
    unseen = np.flatnonzero(new < 0)
    if unseen.size:
        label = labels[codes[unseen[0]]]
        raise DataError(f"'{what}' has the level {label!r} in the new data, which the model "
                        f"was not fitted with; levels are: {', '.join(fitted_levels[:30])}. "
                        "Use only these levels for predictions")
    return new.astype(np.intp, copy=False)


def _group_factor(group: tuple, cols: _Columns, keep: np.ndarray) -> tuple:
    """(codes, labels) of a grouping factor on the kept rows, levels in lme4's order.

    An interaction ``a:b`` has labels ``"a1:b1"`` with the first factor varying slowest,
    unused combinations dropped: what R's ``factor(a:b)`` gives."""
    codes, labels = cols.factor(group[0])
    codes, labels = _drop_unused(codes[keep], labels)
    for name in group[1:]:
        c2, l2 = cols.factor(name)
        c2, l2 = _drop_unused(c2[keep], l2)
        combined = codes.astype(np.int64) * len(l2) + c2
        codes, uniq = _sorted_factorize(combined)
        labels = [f"{labels[u // len(l2)]}:{l2[u % len(l2)]}" for u in uniq.tolist()]
    return codes, labels


# ---------------------------------------------------------------------------
# The encoder for new data


class DesignEncoder:
    """Re-applies a fitted design's encoding to new data (see
    :class:`lmmcore.structure.DesignEncoder`).

    A plain module-level class holding only picklable state: the formula, the column
    kinds, factor levels, ``scale()``/``center()`` constants, coding plans and the
    fixed-effects columns kept after the rank check.
    """

    def __init__(self, formula: Formula, kinds: dict, levels: dict, constants: dict,
                 fixed_plan: list, fixed_keep: np.ndarray, random_plans: list,
                 group_levels: list):
        self.formula = formula
        self.kinds = kinds
        self.levels = levels
        self.constants = constants
        self.fixed_plan = fixed_plan
        self.fixed_keep = fixed_keep
        self.random_plans = random_plans
        self.group_levels = group_levels

    def _columns(self, newdata: pd.DataFrame, names) -> _Columns:
        if not isinstance(newdata, pd.DataFrame):
            raise DataError("new data must be a table (pandas DataFrame)")
        if not all(isinstance(c, str) for c in newdata.columns):
            newdata = newdata.rename(columns=str)
        for name in names:
            if name not in newdata.columns:
                raise DataError(f"the new data have no column '{name}', which the model uses; "
                                f"columns are: {_list_columns(newdata.columns)}")
        cols = _Columns(self.formula, newdata, self.kinds)
        for name in names:
            if cols.missing(name).any():
                raise DataError(f"column '{name}' of the new data has missing values; fill "
                                "them in or drop those rows before predicting")
        return cols

    def fixed_matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """``X`` for new data with the fitted encoding; raises DataError for a missing
        column or a factor level not seen in fitting."""
        fixed = self.formula.fixed
        names = _variable_columns(fixed.variables)
        cols = self._columns(newdata, names)
        n = len(newdata)
        keep = np.ones(n, dtype=bool)
        values = _variable_values(fixed.variables, cols, keep, self.constants, False,
                                  self.levels, {})
        X, _ = _model_matrix(fixed, self.fixed_plan, values, n)
        return X[:, self.fixed_keep]

    def group_codes(self, newdata: pd.DataFrame) -> list:
        """For each random term in order, ``(codes, Z_raw)`` on new data; a level not
        seen in fitting gets code -1."""
        out = []
        n = len(newdata)
        keep = np.ones(n, dtype=bool)
        for (part, plan), glevels in zip(self.random_plans, self.group_levels):
            names = _variable_columns(part.terms.variables) + list(part.group)
            cols = self._columns(newdata, dict.fromkeys(names))
            values = _variable_values(part.terms.variables, cols, keep, self.constants,
                                      False, self.levels, {})
            Z, _ = _model_matrix(part.terms, plan, values, n)
            labels = _group_labels(part.group, cols)
            codes = pd.Index(glevels).get_indexer(pd.Index(labels)).astype(np.intp)
            out.append((codes, Z))
        return out


def _group_labels(group: tuple, cols: _Columns) -> np.ndarray:
    """Each row's grouping-factor label (``"a:A"`` for an interaction)."""
    result = None
    for name in group:
        codes, labels = cols.factor(name)
        lab = np.asarray(labels, dtype=object)[np.maximum(codes, 0)]
        result = lab if result is None else result + ":" + lab
    return result


def _variable_columns(variables) -> list:
    names = []
    for v in variables:
        for c in v.columns:
            if c not in names:
                names.append(c)
    return names


# ---------------------------------------------------------------------------
# build_design


def build_design(formula, data: pd.DataFrame, *, categorical=None, numeric=None,
                 reference_levels=None) -> MixedDesign:
    """Build the model structure of an lme4 formula on a data frame (lme4's ``lFormula``).

    Parameters
    ----------
    formula : str or Formula
        E.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    categorical, numeric : iterable of str, optional
        Columns to treat as categorical (e.g. integer codes) or as numeric (text that
        holds numbers).  Otherwise numeric dtypes are numeric and the rest categorical.
    reference_levels : dict, optional
        Column (or variable label such as ``"factor(Days)"``) -> level label used as the
        reference (first) level of its treatment contrasts.

    Returns
    -------
    MixedDesign

    Raises
    ------
    FormulaError
        Bad formula text, or a column not in the data.
    DataError
        Non-numeric response, no complete rows, non-finite transform results, a
        predictor with a single value, too large a design.
    FitError
        A grouping factor with one level, or with as many levels as observations, or
        more random effects than observations (lme4's checks).

    Notes
    -----
    Rows with a missing value in any column the formula uses are dropped (``na.omit``)
    and counted in ``n_dropped_na``.  ``scale()`` and ``center()`` use the mean and SD
    of all non-missing values of their argument, as R evaluates them before
    ``na.omit``.  Fixed-effects columns that are linearly dependent on earlier columns
    (relative tolerance 1e-7) are dropped and named in ``dropped_fixed``.  Random terms
    are put in lme4's order: ``rev(order(nlevels))`` when the numbers of levels are not
    already non-increasing.
    """
    formula = parse_formula(formula)
    data = _check_columns(formula, data)
    reference_levels = dict(reference_levels or {})
    series = {name: data[name] for name in formula.columns}
    kinds = _column_kinds(formula, data, categorical, numeric, series)
    cols = _Columns(formula, data, kinds, series)

    resp = formula.response
    for c in resp.columns:
        if kinds[c] != "numeric":
            raise DataError(f"the response '{c}' must be numeric, but it is categorical "
                            f"(e.g. {str(data[c].dropna().iloc[0]) if data[c].notna().any() else 'empty'!r}); "
                            "choose a numeric response column")

    n_all = len(data)
    missing = np.zeros(n_all, dtype=bool)
    for name in formula.columns:
        missing |= cols.missing(name)
    keep = ~missing
    n = int(keep.sum())
    n_dropped = n_all - n
    if n == 0:
        raise DataError("no rows are left: every row has a missing value in a column the "
                        f"model uses ({', '.join(formula.columns)}); fill in the values or "
                        "use other columns" if n_all else "the data have no rows")

    constants: dict = {}
    levels: dict = {}
    failures = None
    if resp.kind == "cbind":
        successes, fails = cbind_parts(resp)
        pair = _variable_values([successes, fails], cols, keep, constants, True, levels, {})
        y, failures = pair[successes.label], pair[fails.label]
    else:
        y = _variable_values([resp], cols, keep, constants, True, levels, {})[resp.label]

    def is_factor(v):
        return v.kind == "factor" or (v.kind == "column" and kinds[v.column] != "numeric")

    fixed = formula.fixed
    values = _variable_values(fixed.variables, cols, keep, constants, True, levels,
                              reference_levels)
    plan = _coding_plan(fixed, is_factor)
    _check_size(fixed, plan, values, n, "fixed-effects")
    X_full, names_full = _model_matrix(fixed, plan, values, n)
    fixed_keep = _rank_keep(X_full)
    X = np.ascontiguousarray(X_full[:, fixed_keep]) if len(fixed_keep) < X_full.shape[1] \
        else X_full
    dropped = tuple(nm for j, nm in enumerate(names_full) if j not in set(fixed_keep.tolist()))

    terms, plans, group_levels = [], [], []
    for part in formula.random:
        pvalues = _variable_values(part.terms.variables, cols, keep, constants, True, levels,
                                   reference_levels)
        pplan = _coding_plan(part.terms, is_factor)
        _check_size(part.terms, pplan, pvalues, n, f"random term {part.source}")
        Z, znames = _model_matrix(part.terms, pplan, pvalues, n)
        codes, glabels = _group_factor(part.group, cols, keep)
        check_grouping_factor(part.group_name, part.source, len(glabels), Z.shape[1], n)
        terms.append(RandomTerm(part.group_name, tuple(glabels), codes, tuple(znames), Z))
        plans.append((part, pplan))
        group_levels.append(tuple(glabels))

    nl = [t.n_levels for t in terms]
    if any(b > a for a, b in zip(nl, nl[1:])):
        # lme4's mkReTrms: rev(order(nl)), order() being stable
        order = np.argsort(nl, kind="stable")[::-1].tolist()
        terms = [terms[i] for i in order]
        plans = [plans[i] for i in order]
        group_levels = [group_levels[i] for i in order]

    encoder = DesignEncoder(formula, kinds, levels, constants, plan, fixed_keep, plans,
                            group_levels)
    # the fixed part's model frame: lmerTest's type III contrasts (lmmcore.inference) need it
    encoder.fixed_values = values
    return MixedDesign(
        formula=str(formula),
        response_name=resp.label,
        y=y,
        X=X,
        fixed_names=tuple(nm for j, nm in enumerate(names_full) if j in set(fixed_keep.tolist())),
        dropped_fixed=dropped,
        random_terms=tuple(terms),
        n_dropped_na=n_dropped,
        row_index=data.index[keep],
        encoder=encoder,
        failures=failures,
    )


def _check_size(mterms, plan, values, n: int, what: str) -> None:
    p = int(mterms.intercept) + sum(_term_size(t, c, values) for t, c in zip(mterms.terms, plan))
    if p > MAX_FIXED_COLUMNS or p * n > MAX_MATRIX_CELLS:
        raise DataError(f"the {what} part would have {p:,} columns for {n:,} rows, too many "
                        "to fit; a categorical column with many levels belongs in a random "
                        "term such as (1 | column), not in an interaction")


def check_grouping_factor(group: str, term_text: str, n_levels: int, k: int, n: int) -> None:
    """lme4's checks on a grouping factor (lmerControl defaults, all 'stop'):
    check.nlev.gtr.1, check.nobs.vs.nlev and check.nobs.vs.nRE.

    ``n_levels`` counts the levels present in the ``n`` rows used; ``k`` is the number of
    columns of the term ``term_text`` (e.g. ``"(Days | Subject)"``).
    """
    if n_levels < 2:
        raise FitError(f"the grouping factor '{group}' has only one level in the rows used, but "
                       "a random effect needs at least two groups to estimate a variance; "
                       f"remove {term_text} or use a column with several groups")
    if n_levels >= n:
        raise FitError(f"the grouping factor '{group}' has {n_levels} levels for {n} observations "
                       "(as many levels as observations): each observation is its own group, "
                       "so its variance cannot be told apart from the residual variance; use a "
                       f"grouping column with repeated values, or remove {term_text}")
    if n <= n_levels * k:
        raise FitError(f"the term {term_text} has {n_levels * k} random effects for only {n} "
                       "observations, so its variances and the residual variance cannot all "
                       "be estimated; use a simpler random term, e.g. (1 | "
                       f"{group})")


def check_single_response(design: MixedDesign, fitter: str) -> None:
    """Refuse a ``cbind(successes, failures)`` response for a Gaussian model (``lm``,
    ``lmer``): it is a binomial response."""
    if design.failures is not None:
        raise DataError(f"{design.response_name} is a binomial response (successes, failures); "
                        f"{fitter} needs one numeric response column. Fit it with "
                        "glmer(..., family='binomial')")
