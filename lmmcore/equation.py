"""A fitted model written as the lecture writes it: the equation, its symbols and the count.

``model_equation(fit)`` turns an ``lm`` or ``lmer`` fit into LaTeX lines such as

    Reaction_ij = beta_0 + beta_1 Days_ij + u_0i + u_1i Days_ij + e_ij
    (u_0i, u_1i)' ~ N(0, [[sigma_u0^2, rho sigma_u0 sigma_u1], [.., sigma_u1^2]])
    e_ij ~ N(0, sigma^2)

with one index letter per grouping factor (a nested factor carries its parent's index
too: ``v_ij`` for cask within batch ``i``) and a last one for the observation, one
indicator per non-reference factor level named as in the coefficient table
(``condition2``), one line per random term (a correlated term with its covariance
matrix, ``||`` terms as independent scalars) and the residual.  Beside it: each symbol's
estimate and the parameter count, fixed effects + variance-covariance parameters +
residual, which is the ``npar`` lme4's ``anova()`` prints.

Everything is read from the fit's frozen structure (``fit.design``: fixed-effect names,
random terms in lme4's order, factor levels) and its estimates; nothing is refitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Index letters: the grouping factors take them in order, the observation the next one.
INDEX_LETTERS = "ijklmnpqrst"
# Random-effect letters, one per grouping factor (the lecture's U_i is u_i here).
EFFECT_LETTERS = "uvwabcdfgh"

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
                  "#": r"\#", "%": r"\%", "_": r"\_", "^": r"\^{}", "~": r"\~{}"}


def latex_text(name: str) -> str:
    r"""``name`` as upright LaTeX text (``\text{...}``) with every special character escaped,
    so a column called ``a_b`` or ``<script>`` prints as itself and runs nothing."""
    return r"\text{" + "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(name)) + "}"


@dataclass(frozen=True)
class ModelEquation:
    """The model as equations, its symbols and its parameter count.

    Attributes
    ----------
    lines : tuple of str
        LaTeX, one display line each: the model, one line per random term (or group of
        independent terms), the residual's distribution.
    indices : tuple of (str, str)
        Each index letter and what it counts, e.g. ``("i", "Subject")``,
        ``("j", "observation within Subject i")``.
    symbols : pandas.DataFrame
        One row per parameter: ``symbol`` (LaTeX), ``meaning`` (plain words), ``kind``
        (``"fixed effect"``, ``"variance-covariance"`` or ``"residual"``) and
        ``estimate`` (fixed effects as estimated; standard deviations and correlations
        as ``summary()`` prints them).
    counts : dict
        ``{"fixed": p, "variance-covariance": q, "residual": 1, "total": p + q + 1}``;
        ``total`` equals the fit's ``npar`` (anova's ``npar`` column).
    """

    lines: tuple
    indices: tuple
    symbols: pd.DataFrame
    counts: dict

    @property
    def latex(self) -> str:
        r"""All lines in one ``aligned``-free block, separated by ``\\``."""
        return r" \\ ".join(self.lines)


def _is_lm(fit) -> bool:
    return not getattr(fit.design, "random_terms", ())


def _factor_columns(design) -> dict:
    """Fixed-effect column name -> (factor, level) for single-factor indicator columns."""
    encoder = getattr(design, "encoder", None)
    levels = getattr(encoder, "levels", None) or {}
    out = {}
    for factor, labels in levels.items():
        for level in tuple(labels)[1:]:
            out[f"{factor}{level}"] = (factor, str(level))
    return out


def _variable(name: str, sub: str) -> str:
    """A model-matrix column at observation ``sub``: ``Days_{ij}``; an interaction
    ``Time:Diet2`` as the product of its parts."""
    # R writes a non-syntactic name in backticks (`days of sleep`); the equation drops them.
    parts = [p[1:-1] if len(p) > 1 and p.startswith("`") and p.endswith("`") else p
             for p in name.split(":")]
    return r" \cdot ".join(f"{latex_text(p)}_{{{sub}}}" for p in parts)


class _Groups:
    """Index letters and effect letters for the grouping factors, nesting included.

    A factor whose name is an interaction of other grouping factors (``cask:batch`` next to
    ``batch``, as ``(1 | batch/cask)`` expands) is nested in them: its subscript is its
    parents' letters followed by its own.
    """

    def __init__(self, group_names):
        unique = list(dict.fromkeys(group_names))
        parts = {g: set(g.split(":")) for g in unique}
        # Outer factors first, so a nested factor's parents already have letters.
        ordered = sorted(unique, key=lambda g: (len(parts[g]), unique.index(g)))
        self.letter, self.sub, self.effect, self.parent = {}, {}, {}, {}
        for position, g in enumerate(ordered):
            self.letter[g] = INDEX_LETTERS[position]
            outers = [h for h in ordered[:position] if parts[h] < parts[g]]
            parent = max(outers, key=lambda h: len(parts[h])) if outers else None
            self.parent[g] = parent
            self.sub[g] = (self.sub[parent] if parent else "") + self.letter[g]
        for position, g in enumerate(ordered):
            self.effect[g] = (EFFECT_LETTERS[position] if position < len(EFFECT_LETTERS)
                              else f"u^{{({position + 1})}}")
        self.observation = INDEX_LETTERS[len(ordered)]
        self.order = ordered

    @property
    def obs_sub(self) -> str:
        return "".join(self.letter[g] for g in self.order) + self.observation

    def meaning(self, g) -> str:
        parent = self.parent[g]
        if parent is None:
            return g
        own = [p for p in g.split(":") if p not in set(parent.split(":"))]
        return f"{' : '.join(own) or g} within {parent} {self.letter[parent]}"


def _coefficient_meaning(name: str, factor_columns: dict) -> str:
    if name == "(Intercept)":
        return "intercept: the predicted value when every predictor is 0 or at its reference level"
    if name in factor_columns:
        factor, level = factor_columns[name]
        return f"{name}: the difference for {factor} = {level} against the reference level"
    if ":" in name:
        return f"{name}: the interaction (product of {', '.join(name.split(':'))})"
    return f"{name}: the change per unit of {name}"


def model_equation(fit) -> ModelEquation:
    """The fitted model ``fit`` (``lmmcore.lm`` or ``lmmcore.lmer``) as the lecture writes it.

    Parameters
    ----------
    fit : LinearFit or MixedFit

    Returns
    -------
    ModelEquation

    Notes
    -----
    Distributions are written with variances, :math:`\\mathcal N(0, \\sigma^2)`; the symbol
    table gives standard deviations, as ``summary()`` prints them.  Correlated terms of
    more than three columns show their covariance matrix as :math:`\\Sigma`.
    """
    design = fit.design
    terms = tuple(getattr(design, "random_terms", ()))
    factor_columns = _factor_columns(design)
    rows = []

    if _is_lm(fit):
        groups = None
        obs = "i"
        indices = (("i", "observation"),)
    else:
        groups = _Groups([t.group_name for t in terms])
        obs = groups.obs_sub
        indices = tuple((groups.letter[g], groups.meaning(g)) for g in groups.order)
        last = groups.order[-1] if len(groups.order) == 1 else None
        indices += ((groups.observation,
                     f"observation within {last} {groups.letter[last]}" if last else "observation"),)

    # Fixed part: beta_0 for the intercept, beta_1... for the other columns.
    fixed = []
    start = 0 if "(Intercept)" in design.fixed_names else 1
    fixef = fit.fixef
    for offset, name in enumerate(design.fixed_names):
        beta = rf"\beta_{{{offset + start}}}"
        fixed.append(beta if name == "(Intercept)" else f"{beta} {_variable(name, obs)}")
        rows.append((beta, _coefficient_meaning(name, factor_columns), "fixed effect",
                     float(fixef[name])))

    # Random part: per grouping factor, its columns numbered over all its terms.
    random_sum, distribution_lines = [], []
    if groups is not None:
        sd, corr = _variance_estimates(fit)
        column_number = {g: 0 for g in groups.order}
        group_terms = {g: [t for t in terms if t.group_name == g] for g in groups.order}
        for g in groups.order:
            letter, sub = groups.effect[g], groups.sub[g]
            columns_total = sum(t.n_columns for t in group_terms[g])
            scalars = []
            for term in group_terms[g]:
                symbols = []
                for column in term.column_names:
                    number = column_number[g]
                    column_number[g] += 1
                    name = f"{letter}_{{{number}{sub}}}" if columns_total > 1 else f"{letter}_{{{sub}}}"
                    sd_symbol = (rf"\sigma_{{{letter}{number}}}" if columns_total > 1
                                 else rf"\sigma_{{{letter}}}")
                    symbols.append((name, sd_symbol, column))
                    random_sum.append(name if column == "(Intercept)"
                                      else f"{name} {_variable(column, obs)}")
                    rows.append((sd_symbol, f"SD of {g}'s {column} across {g} levels",
                                 "variance-covariance", sd.get((g, column), float("nan"))))
                if len(symbols) == 1:
                    name, sd_symbol, _ = symbols[0]
                    scalars.append(name)
                    distribution_lines.append(rf"{name} \sim \mathcal{{N}}(0,\ {sd_symbol}^2)")
                else:
                    distribution_lines.append(_correlated_line(symbols, letter))
                    for a in range(len(symbols)):
                        for b in range(a):
                            rho = _rho_symbol(letter, symbols, a, b)
                            rows.append((rho, f"correlation of {g}'s {symbols[b][2]} and "
                                              f"{symbols[a][2]}", "variance-covariance",
                                         corr.get((g, symbols[a][2], symbols[b][2]), float("nan"))))
            if len(scalars) > 1:
                distribution_lines.append(", ".join(scalars) + r"\ \text{independent}")

    rows.append((r"\sigma", "residual SD: spread of observations around their predicted value",
                 "residual", float(fit.sigma)))
    response = f"{latex_text(design.response_name)}_{{{obs}}}"
    rhs = " + ".join(fixed + random_sum + [rf"\varepsilon_{{{obs}}}"])
    lines = (f"{response} = {rhs}",) + tuple(distribution_lines) + (
        rf"\varepsilon_{{{obs}}} \sim \mathcal{{N}}(0,\ \sigma^2)",)
    symbols = pd.DataFrame(rows, columns=["symbol", "meaning", "kind", "estimate"])
    counts = {
        "fixed": int((symbols["kind"] == "fixed effect").sum()),
        "variance-covariance": int((symbols["kind"] == "variance-covariance").sum()),
        "residual": 1,
    }
    counts["total"] = sum(counts.values())
    return ModelEquation(lines=lines, indices=indices, symbols=symbols, counts=counts)


def _rho_symbol(letter, symbols, a, b) -> str:
    return rf"\rho_{{{letter}{_number(symbols[b][1])}{_number(symbols[a][1])}}}"


def _number(sd_symbol: str) -> str:
    """The column number inside ``\\sigma_{u1}``."""
    return sd_symbol.rstrip("}").split("{", 1)[1][1:]


def _correlated_line(symbols, letter) -> str:
    names = [s[0] for s in symbols]
    k = len(names)
    vector = r"\begin{pmatrix}" + r" \\ ".join(names) + r"\end{pmatrix}"
    zeros = r"\begin{pmatrix}" + r" \\ ".join(["0"] * k) + r"\end{pmatrix}"
    if k > 3:
        return rf"{vector} \sim \mathcal{{N}}\left({zeros},\ \Sigma_{{{letter}}}\right)"
    cells = []
    for a in range(k):
        row = []
        for b in range(k):
            if a == b:
                row.append(f"{symbols[a][1]}^2")
            else:
                lo, hi = (a, b) if a > b else (b, a)
                row.append(f"{_rho_symbol(letter, symbols, lo, hi)} {symbols[a][1]} {symbols[b][1]}")
        cells.append(" & ".join(row))
    matrix = r"\begin{pmatrix}" + r" \\ ".join(cells) + r"\end{pmatrix}"
    return rf"{vector} \sim \mathcal{{N}}\left({zeros},\ {matrix}\right)"


def _variance_estimates(fit) -> tuple:
    """``{(group, column): sd}`` and ``{(group, column_a, column_b): corr}`` from varcorr
    (lme4 names a second ``||`` term's group ``Subject.1``: mapped back to ``Subject``)."""
    vc = fit.varcorr
    groups = {t.group_name for t in fit.design.random_terms}
    sd, corr = {}, {}
    for _, row in vc.iterrows():
        grp = str(row["grp"])
        if grp == "Residual":
            continue
        base = grp
        while base not in groups and "." in base:
            base = base.rsplit(".", 1)[0]
        var1, var2 = row["var1"], row["var2"]
        if var2 is None or (isinstance(var2, float) and var2 != var2) or var2 == "":
            sd[(base, str(var1))] = float(row["sdcor"])
        else:
            corr[(base, str(var1), str(var2))] = float(row["sdcor"])
            corr[(base, str(var2), str(var1))] = float(row["sdcor"])
    return sd, corr
