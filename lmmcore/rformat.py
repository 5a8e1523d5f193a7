"""R's number printing: the digits, widths and stars students see in R's console.

Students compare lmmcore's printed tables with R's line by line, so this module
reproduces the few pieces of R's printing that summaries and anova tables use:

* :func:`format_numbers` - ``format(x, digits=)`` (R's C routine ``formatReal``: a common
  number of decimals for a vector, fixed or scientific notation, whichever is narrower);
* :func:`format_pvalues` - ``format.pval``;
* :func:`format_coef_matrix` - ``printCoefmat`` (coefficient and anova tables, with
  significance stars and the "Signif. codes" legend);
* :func:`format_named_vector` - ``print`` of a named numeric vector (the residual
  quantiles of ``summary.lm``);
* :func:`format_g` and :func:`format_signif` - ``formatC(x, digits=)`` and
  ``format(signif(x, digits))``;
* :func:`abbreviate` - ``abbreviate()``, for the row and column names of lme4's
  correlation table;
* :func:`cat_fill` - the line breaks of ``cat(..., fill = TRUE)``.

Whole printed layouts (summaries, anova tables) are assembled in :mod:`lmmcore.printing`.

The R sources followed are ``src/main/format.c`` (``scientific``, ``formatReal``) and
``src/library/stats/R/lm.R`` / ``anova.R`` (R 4.2).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

DOUBLE_EPS = float(np.finfo(float).eps)
SIGNIF_LEGEND = "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"


def _scientific(x: float, digits: int):
    """R's ``scientific()``: sign, decimal exponent and significant digits of ``x``
    when rounded to ``digits`` significant digits (exact decimal arithmetic stands in
    for R's long double)."""
    if x == 0.0:
        return 0, 0, 1, False
    neg = 1 if x < 0 else 0
    r = abs(x)
    kp = math.floor(math.log10(r)) - digits + 1
    r_prec = Decimal(r).scaleb(-kp)
    if r_prec < Decimal(10) ** (digits - 1):
        r_prec *= 10
        kp -= 1
    alpha = int(r_prec.to_integral_value(rounding=ROUND_HALF_EVEN))
    nsig = digits
    for _ in range(digits):
        if alpha % 10 == 0:
            alpha //= 10
            nsig -= 1
        else:
            break
    if nsig == 0 and digits > 0:
        nsig = 1
        kp += 1
    kpower = kp + digits - 1
    # Fixed notation can keep a value below 10^(kpower) that scientific rounds up
    # (9996 with 3 digits): R then needs one digit fewer on the left.
    rgt = min(max(digits - kpower, 0), 27)
    fuzz = 0.5 / 10.0 ** rgt
    widens = 0 < kpower <= 27 and r < 10.0 ** kpower - fuzz
    return neg, kpower, nsig, widens


def _format_spec(values, digits: int, nsmall: int = 0, scientific: bool = True):
    """R's ``formatReal``: (width, decimals, exponent digits; 0 = fixed notation).
    ``scientific=False`` is R's ``format(scientific = FALSE)``: always fixed notation."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0, 0, 0
    neg = 0
    rgt = mxsl = mxns = mxe = -(10 ** 9)
    mxl = mxe
    mne = 10 ** 9
    for v in finite:
        neg_i, kpower, nsig, widens = _scientific(v, digits)
        left = kpower + 1
        if widens:
            left -= 1
        sleft = neg_i + (1 if left <= 0 else left)
        right = nsig - left
        neg = neg or neg_i
        rgt = max(rgt, right)
        mxl = max(mxl, left)
        mxsl = max(mxsl, sleft)
        mxns = max(mxns, nsig)
        mxe = max(mxe, kpower)
        mne = min(mne, kpower)
    if mxl < 0:
        mxsl = 1 + neg
    rgt = max(rgt, 0)
    w_fixed = mxsl + rgt + (rgt != 0)
    e = 2 if (mxe >= 100 or mne <= -99) else 1
    d = mxns - 1
    w = neg + (d > 0) + d + 4 + e
    if w_fixed <= w or not scientific:
        rgt = max(rgt, nsmall)
        return mxsl + rgt + (rgt != 0), rgt, 0
    return w, d, e


def _encode(v: float, w: int, d: int, e: int) -> str:
    if math.isnan(v):
        return "NaN".rjust(w)
    if math.isinf(v):
        return ("Inf" if v > 0 else "-Inf").rjust(w)
    if e:
        return f"{v:.{d}e}".rjust(w)
    return f"{v:.{d}f}".rjust(w)


def format_numbers(values, digits: int = 7, na: str = "NA", nsmall: int = 0,
                   scientific: bool = True) -> list:
    """Format numbers as R's ``format(x, digits=digits)``: common decimals, common width.

    Parameters
    ----------
    values : sequence of float
        NaN stands for R's ``NA`` and is printed as ``na``.
    digits : int
        Significant digits the value needing most of them must show.
    scientific : bool
        False: never scientific notation (R's ``scientific = FALSE``).

    Returns
    -------
    list of str
        All of the same width, right-justified.
    """
    vals = [float(v) for v in values]
    w, d, e = _format_spec(vals, digits, nsmall, scientific)
    out = [na if math.isnan(v) else _encode(v, 0, d, e) for v in vals]
    width = max((len(s) for s in out), default=0)
    return [s.rjust(width) for s in out]


def r_round(x, digits: int):
    """``round(x, digits)`` elementwise (NaN kept)."""
    arr = np.asarray(x, dtype=float)
    return np.round(arr, digits)


def zapsmall(x, digits: int):
    """R's ``zapsmall`` (R 4.2): round so that values tiny next to the largest become 0.

    R 4.2 rounds to ``digits - log10(max|x|)`` digits, a non-integer that ``round()``
    takes to the nearest integer (so 1814.85047 keeps two decimals, not one).
    """
    arr = np.asarray(x, dtype=float)
    ok = ~np.isnan(arr)
    if not ok.any():
        return arr
    mx = np.max(np.abs(arr[ok]))
    nd = max(0, int(math.floor(digits - math.log10(mx) + 0.5))) if mx > 0 else digits
    return np.round(arr, nd)


def format_pvalues(pvalues, digits: int = 4, eps: float = DOUBLE_EPS) -> list:
    """R's ``format.pval``: p-values, those below ``eps`` as ``"< 2.2e-16"``."""
    pv = [float(p) for p in pvalues]
    out = [""] * len(pv)
    is0 = [(not math.isnan(p)) and p < eps for p in pv]
    rest = [i for i, p in enumerate(pv) if not math.isnan(p) and not is0[i]]
    rr = {}
    if rest:
        # R 4.2's rule: fixed notation down to 1e-4 (exponent -4) when digits > 1
        expo = {i: math.floor(math.log10(pv[i])) if pv[i] > 0 else -50 for i in rest}
        fixp = [i for i in rest if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
        sci = [i for i in rest if i not in fixp]
        for group in (fixp, sci):
            if group:
                formatted = format_numbers([pv[i] for i in group], digits)
                for i, s in zip(group, formatted):
                    rr[i] = s
        for i, s in rr.items():
            out[i] = s
    if any(is0):
        d = max(1, digits - 2)
        if rest:
            nc = max(len(s) for s in rr.values())
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + format_numbers([eps], d)[0].strip()
        for i, z in enumerate(is0):
            if z:
                out[i] = text
    for i, p in enumerate(pv):
        if math.isnan(p):
            out[i] = "NA"
    return out


def signif_stars(p: float) -> str:
    """R's significance symbol for one p-value (cut points .001 .01 .05 .1)."""
    if math.isnan(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return sym
    return " "


def format_matrix(cells, row_names, col_names, width: int = 80, right: bool = True) -> list:
    """R's ``print.default`` of a character matrix (``quote=FALSE``).

    Row names left-justified, each column justified (right, or left with
    ``right=False``) to its widest cell or header and preceded by one space; columns that
    do not fit in ``width`` continue in a further block, as R wraps wide matrices.
    """
    def just(text, w):
        return text.rjust(w) if right else text.ljust(w)

    rn_w = max((len(r) for r in row_names), default=0)
    ncol = len(col_names)
    col_w = [max([len(col_names[j])] + [len(row[j]) for row in cells]) for j in range(ncol)]
    lines = []
    start = 0
    while start < ncol or (ncol == 0 and not lines):
        end, used = start, rn_w
        while end < ncol and (end == start or used + 1 + col_w[end] <= width):
            used += 1 + col_w[end]
            end += 1
        header = " " * rn_w + "".join(" " + just(col_names[j], col_w[j]) for j in range(start, end))
        lines.append(header)
        for name, row in zip(row_names, cells):
            lines.append(name.ljust(rn_w) + "".join(" " + just(row[j], col_w[j]) for j in range(start, end)))
        start = end
        if ncol == 0:
            break
    return lines


def format_coef_matrix(
    values,
    row_names,
    col_names,
    *,
    digits: int,
    cs_ind=(),
    tst_ind=(),
    zap_ind=(),
    has_pvalue: bool = True,
    na_print: str = "NA",
    signif_legend: bool = True,
    width: int = 80,
) -> list:
    """R's ``printCoefmat``: a coefficient or anova table as printed lines.

    Parameters
    ----------
    values : 2-D array-like of float
        NaN is R's ``NA`` (printed as ``na_print``).
    cs_ind, tst_ind, zap_ind : sequences of int
        0-based column indices of the estimate/SE columns (rounded and formatted
        together), test statistics (rounded to ``dig.tst``) and columns to ``zapsmall``,
        as R's arguments of the same names.
    has_pvalue : bool
        The last column holds p-values: formatted with ``format.pval`` and followed by
        significance stars when any is below 0.1.

    Returns
    -------
    list of str
        The table lines and, when stars are shown, ``"---"`` and the legend.
    """
    xm = np.array(values, dtype=float).reshape(len(row_names), len(col_names))
    nr, nc = xm.shape
    dig_tst = max(1, min(5, digits - 1))
    cf = [["" for _ in range(nc)] for _ in range(nr)]
    ina = np.isnan(xm)
    for i in zap_ind:
        xm[:, i] = zapsmall(xm[:, i], digits)
    cs_ind, tst_ind = list(cs_ind), list(tst_ind)
    if cs_ind:
        coef_se = xm[:, cs_ind]
        acs = np.abs(coef_se)
        finite = np.isfinite(acs)
        if finite.any():
            nz = acs[finite & (acs != 0)]
            digmin = 1 + (np.floor(np.log10([nz.min(), nz.max()])) if nz.size else np.array([0.0]))
            nd = int(max(1, *(digits - digmin)))
            rounded = np.round(coef_se, nd)
            flat = format_numbers(rounded.ravel(order="F"), digits)
            k = 0
            for j in cs_ind:
                for r in range(nr):
                    cf[r][j] = flat[k]
                    k += 1
    for j in tst_ind:
        col = format_numbers(np.round(xm[:, j], dig_tst), digits)
        for r in range(nr):
            cf[r][j] = col[r]
    p_col = nc - 1 if has_pvalue else None
    for j in range(nc):
        if j in cs_ind or j in tst_ind or j == p_col:
            continue
        col = format_numbers(xm[:, j], digits)
        for r in range(nr):
            cf[r][j] = col[r]
    # A non-zero value shown as 0 is reformatted with one digit fewer (R does this).
    for r in range(nr):
        for j in range(nc):
            if j == p_col or j in tst_ind or ina[r, j]:
                continue
            try:
                shown = float(cf[r][j])
            except ValueError:
                continue
            if (xm[r, j] == 0) != (shown == 0):
                cf[r][j] = format_numbers([xm[r, j]], max(1, digits - 1))[0]
    for r in range(nr):
        for j in range(nc):
            if ina[r, j]:
                cf[r][j] = na_print
    stars = False
    out_cols = list(col_names)
    if has_pvalue:
        pv = xm[:, p_col]
        ok = ~np.isnan(pv)
        if ok.any():
            formatted = format_pvalues(pv[ok], digits=dig_tst)
            for r, s in zip(np.flatnonzero(ok), formatted):
                cf[r][p_col] = s
            stars = bool((pv[ok] < 0.1).any())
            if stars:
                syms = [signif_stars(p) for p in pv]
                w = max(len(s) for s in syms)
                for r in range(nr):
                    cf[r].append(syms[r].ljust(w))
                out_cols.append("")
    lines = format_matrix(cf, list(row_names), out_cols, width=width)
    if stars and signif_legend:
        lines += ["---", SIGNIF_LEGEND]
    return lines


def format_named_vector(values, names, digits: int = 7, width: int = 80) -> list:
    """R's ``print`` of a named numeric vector: names over values, wrapped at ``width``."""
    return print_named(format_numbers(values, digits), names, width)


def print_named(vals, names, width: int = 80) -> list:
    """R's ``print`` of a named vector whose values are already text: names over values,
    each right-justified to the widest of them all, wrapped at ``width``."""
    w = max([len(v) for v in vals] + [len(n) for n in names])
    per_line = max(1, width // (w + 1))
    lines = []
    for start in range(0, len(vals), per_line):
        chunk = range(start, min(start + per_line, len(vals)))
        lines.append("".join(names[i].rjust(w) + " " for i in chunk))
        lines.append("".join(vals[i].rjust(w) + " " for i in chunk))
    return lines


def format_g(x: float, digits: int) -> str:
    """R's ``formatC(x, digits=digits)``: C's ``%.*g`` right-justified in ``digits + 1``
    characters (formatC's default width), e.g. ``formatC(71.3, digits=4)`` is " 71.3"."""
    return f"{x:>{digits + 1}.{digits}g}"


def format_signif(x: float, digits: int) -> str:
    """R's ``format(signif(x, digits))`` (then printed with 7 significant digits)."""
    if x == 0 or not math.isfinite(x):
        return format_numbers([x], 7)[0]
    rounded = float(f"{x:.{digits}g}")
    return format_numbers([rounded], 7)[0]


def format_r_number(x: float) -> str:
    """How ``cat()`` shows a number: up to 7 significant digits (``as.character``-like)."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return format_numbers([x], 7)[0]


def abbreviate(name: str, minlength: int) -> str:
    """R's ``abbreviate(name, minlength)`` (method "left.kept"): drop lower-case vowels,
    then lower-case letters, then any character, from the end, never a word's first
    letter, until ``minlength`` characters remain; e.g. "(Intercept)" -> "(Intr)"."""
    s = name
    if len(s) <= minlength:
        return s
    chars = list(s)

    def first_of_word(i):
        return i == 0 or chars[i - 1].isspace()

    for pred in (lambda c: c in "aeiou", lambda c: c.islower(), lambda c: not c.isspace()):
        i = len(chars) - 1
        while i > 0:
            if pred(chars[i]) and not first_of_word(i):
                del chars[i]
                if len(chars) <= minlength:
                    return "".join(chars)
            i -= 1
    return "".join(chars)


def cat_fill(items, width: int = 80) -> list:
    """The lines of R's ``cat(..., fill = TRUE)``: items joined by a space, a new line
    begun before an item that would end past ``width`` (the separator stays at the end
    of the line it follows), as lme4 prints its ``Formula:`` and ``groups:`` lines.

    Examples
    --------
    >>> cat_fill(["Number of obs: 180, groups: ", "Subject, 18"])
    ['Number of obs: 180, groups:  Subject, 18']
    """
    lines: list = []
    line, used = "", 0
    for k, item in enumerate(items):
        if k:
            line += " "
        # R's do_cat counts each item with the separator that follows it
        if used and used + len(item) + 1 > width:
            lines.append(line)
            line, used = "", 0
        line += item
        used += len(item) + 1
    lines.append(line)
    return lines
