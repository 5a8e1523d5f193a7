"""The app's model builder: menu choices -> formula text, and a formula back to choices.

:func:`compose_formula` writes the formula for the model page's menus (response, fixed
predictors, grouping columns, the kind of random effect); :func:`decompose_formula` reads
those menus back from a formula the student typed, or says it is not one the menus can
show.  Both use only the grammar's public API (:func:`lmmcore.formula.parse_formula`,
:func:`lmmcore.formula.quote_name`).
"""

from __future__ import annotations

from lmmcore.errors import FormulaError
from lmmcore.formula import parse_formula, quote_name, response_text

__all__ = ["compose_formula", "decompose_formula", "RANDOM_KINDS", "RANDOM_LABELS", "random_term"]

# The random part of a one-predictor model, one vocabulary for the model builder and the
# pooling pages: which coefficients vary by group.  Words for menus in RANDOM_LABELS; the
# lme4 term is :func:`random_term`'s.
RANDOM_KINDS = ("intercept", "slope", "intercept+slope", "uncorrelated")
RANDOM_LABELS = {"intercept": "intercept only", "slope": "slope only",
                 "intercept+slope": "intercept and slope",
                 "uncorrelated": "both, uncorrelated"}


def random_term(kind: str, slope: str = "x", group: str = "g") -> str:
    """The random term of one kind, e.g. ``(x | g)`` for ``"intercept+slope"``.

    ``slope`` and ``group`` are written as given (quote column names first); ``group``
    may be a nesting such as ``a/b``.
    """
    lhs = {"intercept": "1", "slope": f"0 + {slope}", "intercept+slope": slope,
           "uncorrelated": slope}[kind]
    return f"({lhs} {'||' if kind == 'uncorrelated' else '|'} {group})"


def compose_formula(response: str, fixed=(), interaction: bool = False, groups=(),
                    random: str = "intercept", slope: str | None = None,
                    grouping: str = "crossed") -> str:
    """Write the formula for the app's model builder.

    Parameters
    ----------
    response : str
        Response column, or a binomial ``cbind(successes, failures)`` response.
    fixed : sequence of str
        Fixed-effect predictors (columns); none gives ``1``.
    interaction : bool
        Join the predictors with ``*`` (all interactions) instead of ``+``.
    groups : sequence of str
        Grouping columns; none gives a formula for ``lm``.
    random : {"intercept", "slope", "intercept+slope", "uncorrelated"}
        ``(1 | g)``, ``(0 + slope | g)``, ``(slope | g)`` or ``(slope || g)``
        (:func:`random_term`).
    slope : str, optional
        The column with a random slope; defaults to the first fixed predictor.
    grouping : {"crossed", "nested"}
        Several groups as separate terms ``(1 | a) + (1 | b)`` or nested ``(1 | a/b)``
        (the first group outermost).

    Returns
    -------
    str
        E.g. ``"Reaction ~ Days + (Days | Subject)"``;
        ``parse_formula(compose_formula(...))`` always parses.
    """
    if random not in RANDOM_KINDS:
        raise FormulaError(f"random must be one of {', '.join(RANDOM_KINDS)}, not {random!r}")
    if grouping not in ("crossed", "nested"):
        raise FormulaError(f"grouping must be 'crossed' or 'nested', not {grouping!r}")
    if not response:
        raise FormulaError("choose a response column")
    fixed = [f for f in fixed if f]
    groups = [g for g in groups if g]
    rhs = (" * " if interaction else " + ").join(quote_name(f) for f in fixed) or "1"
    if groups:
        if random != "intercept":
            slope = slope or (fixed[0] if fixed else None)
            if not slope:
                raise FormulaError("a random slope needs a numeric predictor: choose one")
        x = quote_name(slope or "")
        if grouping == "nested" and len(groups) > 1:
            terms = [random_term(random, x, "/".join(quote_name(g) for g in groups))]
        else:
            terms = [random_term(random, x, quote_name(g)) for g in groups]
        rhs = " + ".join([rhs] + terms)
    text = f"{response_text(response)} ~ {rhs}"
    parse_formula(text)
    return text


def decompose_formula(text) -> dict | None:
    """Read the model builder's fields back from a formula, or None if it is not one.

    The inverse of :func:`compose_formula` for the formulas it writes (and the same
    models written differently, e.g. ``1 + Days | Subject``): returns a dict with the
    keys ``response, fixed, interaction, groups, random, slope, grouping``.
    """
    try:
        f = parse_formula(text)
    except FormulaError:
        return None
    if f.response.kind != "column" or not f.fixed.intercept:
        return None
    mains = [t for t in f.fixed.terms if t.order == 1]
    if any(t.variables[0].kind != "column" for t in mains):
        return None
    fixed = [t.variables[0].column for t in mains]
    higher = [t for t in f.fixed.terms if t.order > 1]
    if higher:
        # interactions only as the builder writes them: all of them, a * b * c
        try:
            full = parse_formula(f"{f.response.label} ~ {' * '.join(map(quote_name, fixed))}")
        except FormulaError:
            return None
        if _term_sets(f) != _term_sets(full):
            return None
    fields = {"response": f.response.column, "fixed": fixed, "interaction": bool(higher),
              "groups": [], "random": "intercept", "slope": None, "grouping": "crossed"}
    if not f.random:
        return fields
    by_source: dict = {}
    for part in f.random:
        by_source.setdefault(part.source, []).append(part)
    found = []
    for parts in by_source.values():
        chain = list(dict.fromkeys(p.group for p in parts))
        kinds = {_random_kind([p for p in parts if p.group == g]) for g in chain}
        if len(kinds) != 1 or None in kinds:
            return None
        groups = _unnest(chain)
        if groups is None:
            return None
        found.append((kinds.pop(), groups))
    kind = found[0][0]
    if any(k != kind for k, _ in found):
        return None
    if len(found) == 1 and len(found[0][1]) > 1:
        groups, grouping = found[0][1], "nested"
    elif all(len(g) == 1 for _, g in found):
        groups, grouping = [g[0] for _, g in found], "crossed"
    else:
        return None
    fields.update(groups=groups, random=kind[0], slope=kind[1], grouping=grouping)
    return fields


def _term_sets(f) -> set:
    return {frozenset(v.label for v in t.variables) for t in f.fixed.terms}


def _unnest(chain) -> list | None:
    """lme4's expansion of a/b/c, [("c","b","a"), ("b","a"), ("a",)], back to [a, b, c]."""
    outer = chain[-1]
    if len(outer) != 1:
        return None
    names = [outer[0]]
    for inner, g in zip(reversed(chain[:-1]), reversed(chain[1:])):
        if len(inner) != len(g) + 1 or inner[1:] != g:
            return None
        names.append(inner[0])
    return names


def _random_kind(parts):
    """(one of :data:`RANDOM_KINDS`, slope) for a builder-style term."""
    def single(terms):
        if len(terms.terms) == 1 and terms.terms[0].order == 1 \
                and terms.terms[0].variables[0].kind == "column":
            return terms.terms[0].variables[0].column
        return None

    if len(parts) == 2 and parts[0].bar == "||":
        a, b = parts[0].terms, parts[1].terms
        if a.intercept and not a.terms and not b.intercept and single(b):
            return "uncorrelated", single(b)
        return None
    if len(parts) != 1:
        return None
    t = parts[0].terms
    if not t.terms and t.intercept:
        return "intercept", None
    if single(t):
        return ("intercept+slope" if t.intercept else "slope"), single(t)
    return None
