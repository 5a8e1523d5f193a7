"""The formula grammar: lme4's model formula read by our own parser, never evaluated.

``parse_formula("Reaction ~ Days + (Days | Subject)")`` turns the text into a
:class:`Formula`: the response, the fixed-effects terms with R's ``terms()`` semantics
(``*``, ``^``, ``/``, ``-``, intercept flag, terms ordered by degree) and the random
parts ``(expr | group)`` after lme4's expansions (``||`` into separate terms, ``a/b``
into ``b:a`` and ``a``).  Only an allow-list of transforms is accepted (``log``,
``log2``, ``log10``, ``exp``, ``sqrt``, ``abs``, ``scale``, ``center``, ``I()``
arithmetic, ``factor()``, ``C()``); nothing in the text is ever run as code.

The grammar follows R's operator precedence, lowest first::

    formula := sum '~' sum
    bar     := sum (('|' | '||') group)?          # only directly inside '( )'
    sum     := prod (('+' | '-') prod)*
    prod    := colon (('*' | '/') colon)*
    colon   := unary (':' unary)*
    unary   := ('-' | '+') unary | power
    power   := primary ('^' unary)?
    primary := NAME | NUMBER | NAME '(' sum ')' | '(' bar ')'

Errors are :class:`lmmcore.errors.FormulaError` with the 0-based ``position`` of the
problem; the message says "at character N" with N counted from 1, as a student counts.
"""

from __future__ import annotations

import functools

import re
from dataclasses import dataclass, field

from lmmcore.errors import FormulaError

__all__ = [
    "Formula", "ModelTerms", "RandomPart", "Term", "Variable",
    "parse_formula", "compose_formula", "decompose_formula", "format_number",
    "RANDOM_KINDS", "RANDOM_LABELS", "random_term", "quote_name", "MAX_LENGTH", "MAX_DEPTH", "NUMERIC_TRANSFORMS", "FACTOR_TRANSFORMS",
]

MAX_LENGTH = 2000
MAX_DEPTH = 32
# A cap on terms produced by '*' and '^' so that (a+b+...+z)^10 fails instead of
# expanding to millions of terms.
MAX_TERMS = 500

NUMERIC_TRANSFORMS = ("log", "log2", "log10", "exp", "sqrt", "abs", "scale", "center")
FACTOR_TRANSFORMS = ("factor", "C")
IDENTITY = "I"
ALLOWED_FUNCTIONS = NUMERIC_TRANSFORMS + FACTOR_TRANSFORMS + (IDENTITY,)

_NAME_START = re.compile(r"[^\W\d_]", re.UNICODE)
_SYNTACTIC = re.compile(r"^((\.[^\W\d]|[^\W\d_])[\w.]*|\.)$", re.UNICODE)
_DUNDER = re.compile(r"__\w*__")
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

_FORBIDDEN_CHARS = {
    "'": "text in quotes is not allowed; write a column name as it is, or in back-quotes "
         "(`like this`) if it contains spaces",
    '"': "text in quotes is not allowed; write a column name as it is, or in back-quotes "
         "(`like this`) if it contains spaces",
    "[": "brackets '[' ']' are not allowed; refer to columns by name",
    "]": "brackets '[' ']' are not allowed; refer to columns by name",
    "{": "braces are not allowed in a formula",
    "}": "braces are not allowed in a formula",
    "$": "'$' is not allowed; refer to columns by name",
    "@": "'@' is not allowed; refer to columns by name",
    "=": "'=' is not allowed in a formula; a formula looks like y ~ x + (1 | g)",
    ";": "';' is not allowed in a formula",
    "%": "'%...%' operators are not supported; use ':' for an interaction",
}


# ---------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "number", "op", "(", ")", ",", "end"
    text: str
    pos: int
    value: object = None


_MAX_NUMBER = 1e300


def _show(name: str, limit: int = 40) -> str:
    """A name echoed in a message, shortened: messages are for students, not echoes."""
    return name if len(name) <= limit else name[:limit] + "..."


def _err(message: str, pos: int | None, text: str) -> FormulaError:
    if pos is not None:
        message = f"{message} (at character {pos + 1})"
    return FormulaError(message, pos, text)


def _tokenize(text: str) -> list:
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise _err("this back-quote is never closed: put a ` after the name", i, text)
            name = text[i + 1:j]
            if not name.strip():
                raise _err("empty back-quoted name: put a column name between the back-quotes",
                           i, text)
            tokens.append(_Token("name", name, i, "quoted"))
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            j = m.end()
            if j < n and (text[j].isalpha() or text[j] in "._"):
                raise _err(f"'{_show(text[i:j + 1])}' is neither a number nor a column name; a name "
                           "must start with a letter (use back-quotes for other names)", i, text)
            value = float(text[i:j])
            if value > _MAX_NUMBER:
                raise _err(f"the number {_show(text[i:j])} is too large for a formula", i, text)
            tokens.append(_Token("number", text[i:j], i, value))
            i = j
            continue
        if _NAME_START.match(c) or c == ".":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "._"):
                j += 1
            name = text[i:j]
            if name == ".":
                raise _err("'.' (all other columns) is not supported: list the columns you want",
                           i, text)
            if _DUNDER.search(name):
                raise _err(f"'{_show(name)}' is not allowed: names with double underscores look like "
                           "Python internals; if it really is a column, put it in back-quotes",
                           i, text)
            tokens.append(_Token("name", name, i))
            i = j
            continue
        if c == "_":
            raise _err("a name cannot start with '_'; put such a column name in back-quotes",
                       i, text)
        if c == "|":
            if i + 1 < n and text[i + 1] == "|":
                tokens.append(_Token("op", "||", i))
                i += 2
            else:
                tokens.append(_Token("op", "|", i))
                i += 1
            continue
        if c in "~+-*/:^":
            tokens.append(_Token("op", c, i))
            i += 1
            continue
        if c in "(),":
            tokens.append(_Token(c, c, i))
            i += 1
            continue
        shown = f"'{c}'" if c.isprintable() else f"U+{ord(c):04X}"
        hint = _FORBIDDEN_CHARS.get(c, f"the character {shown} is not allowed in a formula")
        raise _err(hint, i, text)
    tokens.append(_Token("end", "", n))
    return tokens


# ---------------------------------------------------------------------------
# Syntax tree: plain tuples, so a Formula pickles cheaply.
#   ("name", name, pos)             ("num", value, pos)
#   ("call", fname, arg, pos)       ("paren", inner, pos)
#   ("unary", op, operand, pos)     ("binary", op, left, right, pos)
#   ("bar", op, lhs, group, pos)    a random term; pos is its '('


_BINARY_LEVELS = (("+", "-"), ("*", "/"), (":",))


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _advance(self) -> _Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _err(f"the formula is nested too deeply (more than {MAX_DEPTH} levels of "
                       "parentheses or signs)", pos, self.text)

    def _describe(self, t: _Token) -> str:
        if t.kind == "end":
            return "the end of the formula"
        return f"'{t.text}'"

    def _operand_error(self, after: _Token | None) -> FormulaError:
        t = self.tok
        what = "expected a column name, a number or '('"
        if after is not None:
            what += f" after '{after.text}'"
        if t.kind == "end":
            return _err(f"the formula stops too early: {what}", t.pos, self.text)
        return _err(f"{what}, found {self._describe(t)}", t.pos, self.text)

    # grammar
    def formula(self):
        if self.tok.kind == "op" and self.tok.text == "~":
            raise _err("a formula starts with the response column, e.g. 'Reaction ~ Days'",
                       self.tok.pos, self.text)
        lhs = self.sum(None)
        if not (self.tok.kind == "op" and self.tok.text == "~"):
            if self.tok.kind == "end":
                raise _err("expected '~' between the response and the predictors, "
                           "e.g. 'Reaction ~ Days'", self.tok.pos, self.text)
            raise _err(f"expected '~' or an operator after the response, found "
                       f"{self._describe(self.tok)}", self.tok.pos, self.text)
        tilde = self._advance()
        rhs = self.sum(tilde)
        t = self.tok
        if t.kind != "end":
            if t.kind == "op" and t.text == "~":
                raise _err("only one '~' is allowed in a formula", t.pos, self.text)
            if t.kind == "op" and t.text in ("|", "||"):
                raise _err(f"a random-effects term needs parentheses: write "
                           f"'(... {t.text} group)'", t.pos, self.text)
            if t.kind == ")":
                raise _err("this ')' has no matching '('", t.pos, self.text)
            raise _err(f"expected an operator such as '+' or the end of the formula, found "
                       f"{self._describe(t)}", t.pos, self.text)
        return lhs, rhs

    def sum(self, after):
        return self._binary(0, after)

    def _binary(self, level: int, after):
        if level == len(_BINARY_LEVELS):
            return self.unary(after)
        ops = _BINARY_LEVELS[level]
        node = self._binary(level + 1, after)
        while self.tok.kind == "op" and self.tok.text in ops:
            op = self._advance()
            right = self._binary(level + 1, op)
            node = ("binary", op.text, node, right, op.pos)
        return node

    def unary(self, after):
        t = self.tok
        if t.kind == "op" and t.text in ("-", "+"):
            self._enter(t.pos)
            self._advance()
            node = ("unary", t.text, self.unary(t), t.pos)
            self.depth -= 1
            return node
        return self.power(after)

    def power(self, after):
        node = self.primary(after)
        if self.tok.kind == "op" and self.tok.text == "^":
            op = self._advance()
            self._enter(op.pos)
            node = ("binary", "^", node, self.unary(op), op.pos)
            self.depth -= 1
        return node

    def primary(self, after):
        t = self.tok
        if t.kind == "number":
            self._advance()
            return ("num", t.value, t.pos)
        if t.kind == "name":
            self._advance()
            if self.tok.kind == "(":
                return self.call(t)
            return ("name", t.text, t.pos)
        if t.kind == "(":
            self._enter(t.pos)
            self._advance()
            inner = self.sum(t)
            if self.tok.kind == "op" and self.tok.text in ("|", "||"):
                bar = self._advance()
                group = self.group(bar)
                node = ("bar", bar.text, inner, group, t.pos)
            else:
                node = ("paren", inner, t.pos)
            if self.tok.kind != ")":
                if self.tok.kind == "end":
                    raise _err(f"the '(' at character {t.pos + 1} is never closed: add ')'",
                               self.tok.pos, self.text)
                raise _err(f"expected ')' to close the '(' at character {t.pos + 1}, found "
                           f"{self._describe(self.tok)}", self.tok.pos, self.text)
            self._advance()
            self.depth -= 1
            return node
        raise self._operand_error(after)

    def call(self, name_tok: _Token):
        fname = name_tok.text
        if name_tok.value == "quoted" or fname not in ALLOWED_FUNCTIONS:
            raise _err(f"'{_show(fname)}(...)' is not an allowed function; allowed are "
                       + ", ".join(f"{f}()" for f in ALLOWED_FUNCTIONS), name_tok.pos, self.text)
        open_tok = self._advance()
        self._enter(open_tok.pos)
        if self.tok.kind == ")":
            raise _err(f"{fname}() needs a column or expression inside the parentheses",
                       self.tok.pos, self.text)
        arg = self.sum(open_tok)
        if self.tok.kind == ",":
            raise _err(f"{fname}() takes exactly one argument, without options",
                       self.tok.pos, self.text)
        if self.tok.kind == "op" and self.tok.text in ("|", "||", "~"):
            raise _err(f"'{self.tok.text}' cannot be used inside {fname}()",
                       self.tok.pos, self.text)
        if self.tok.kind != ")":
            if self.tok.kind == "end":
                raise _err(f"the '(' of {fname}( at character {open_tok.pos + 1} is never "
                           "closed: add ')'", self.tok.pos, self.text)
            raise _err(f"expected ')' to close {fname}(, found {self._describe(self.tok)}",
                       self.tok.pos, self.text)
        self._advance()
        self.depth -= 1
        return ("call", fname, arg, name_tok.pos)

    def group(self, bar: _Token):
        """A grouping factor: names joined by ':' (interaction) and '/' (nesting)."""
        node = self._group_interaction(bar)
        while self.tok.kind == "op" and self.tok.text == "/":
            op = self._advance()
            node = ("binary", "/", node, self._group_interaction(op), op.pos)
        return node

    def _group_interaction(self, after: _Token):
        node = self._group_name(after)
        while self.tok.kind == "op" and self.tok.text == ":":
            op = self._advance()
            node = ("binary", ":", node, self._group_name(op), op.pos)
        return node

    def _group_name(self, after: _Token):
        t = self.tok
        if t.kind == "name" and self.tokens[self.i + 1].kind != "(":
            self._advance()
            return ("name", t.text, t.pos)
        if t.kind == "end":
            raise _err(f"the formula stops too early: expected a grouping column after "
                       f"'{after.text}'", t.pos, self.text)
        raise _err(f"expected a grouping column name after '{after.text}', found "
                   f"{self._describe(t)} (a grouping factor is a column, or columns joined by "
                   "':' or '/')", t.pos, self.text)


# ---------------------------------------------------------------------------
# Deparsing, as R's deparse() prints a formula


def format_number(value: float) -> str:
    """Print a number as R does (15 significant digits; ``2`` not ``2.0``; ``1e+05``)."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    g = f"{value:.15g}"
    v = float(g)
    mant, exp = f"{v:.14e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    e = int(exp)
    sci = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if "e" in g:
        # R-fixed notation of the 15-digit value
        digits = mant.replace("-", "").replace(".", "")
        sign = "-" if v < 0 else ""
        if e >= 0:
            fixed = sign + (digits + "0" * max(0, e + 1 - len(digits)))[: max(e + 1, 1)]
            rest = digits[e + 1:]
            if rest:
                fixed += "." + rest
        else:
            fixed = sign + "0." + "0" * (-e - 1) + digits
    else:
        fixed = g
    return fixed if len(fixed) <= len(sci) else sci


def quote_name(name: str) -> str:
    """``name`` as it must be written in a formula: back-quoted unless a plain R name."""
    if _SYNTACTIC.match(name) and name != "." and not _DUNDER.search(name) \
            and name not in _R_RESERVED:
        return name
    return f"`{name}`"


_R_RESERVED = frozenset(("if", "else", "repeat", "while", "function", "for", "next", "break",
                         "in", "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA"))
_SPACED = {"+", "-", "*", "|", "||", "~"}


def _deparse(node) -> str:
    kind = node[0]
    if kind == "name":
        return quote_name(node[1])
    if kind == "num":
        return format_number(node[1])
    if kind == "call":
        return f"{node[1]}({_deparse(node[2])})"
    if kind == "paren":
        return f"({_deparse(node[1])})"
    if kind == "unary":
        return f"{node[1]}{_deparse(node[2])}"
    if kind == "binary":
        op = node[1]
        sep = f" {op} " if op in _SPACED else op
        return f"{_deparse(node[2])}{sep}{_deparse(node[3])}"
    if kind == "bar":
        return f"({_deparse(node[2])} {node[1]} {_deparse(node[3])})"
    raise AssertionError(kind)


def _strip_positions(node):
    """The position-free expression stored in a :class:`Variable` (equal when equal text)."""
    kind = node[0]
    if kind == "name":
        return ("col", node[1])
    if kind == "num":
        return ("num", node[1])
    if kind == "call":
        return ("fn", node[1], _strip_positions(node[2]))
    if kind == "paren":
        return ("paren", _strip_positions(node[1]))
    if kind == "unary":
        return ("neg" if node[1] == "-" else "pos", _strip_positions(node[2]))
    if kind == "binary":
        return ("bin", node[1], _strip_positions(node[2]), _strip_positions(node[3]))
    raise AssertionError(kind)


# ---------------------------------------------------------------------------
# The public objects


@dataclass(frozen=True)
class Variable:
    """One variable of a model, as R's ``terms()`` lists it.

    Attributes
    ----------
    label : str
        R's deparsed text: ``"Days"``, ``"log(x)"``, ``"I(Days^2)"``, ``"factor(Days)"``.
    kind : {"column", "factor", "numeric"}
        ``"column"``: a bare column (numeric or categorical according to the data);
        ``"factor"``: ``factor(x)`` / ``C(x)``, always categorical; ``"numeric"``: an
        arithmetic transform, always numeric.
    expr : tuple
        The position-free expression tree (``("col", name)``, ``("num", v)``,
        ``("fn", name, arg)``, ``("bin", op, a, b)``, ``("neg", a)``, ``("pos", a)``,
        ``("paren", a)``).
    columns : tuple of str
        Data columns the variable reads.
    """

    label: str
    kind: str
    expr: tuple
    columns: tuple

    @property
    def column(self) -> str | None:
        """The single column of a bare column or ``factor(x)`` variable, else None."""
        if self.kind in ("column", "factor"):
            return self.columns[0]
        return None


@dataclass(frozen=True)
class Term:
    """A term: an interaction of variables (one variable for a main effect)."""

    variables: tuple

    @property
    def label(self) -> str:
        return ":".join(v.label for v in self.variables)

    @property
    def order(self) -> int:
        return len(self.variables)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class ModelTerms:
    """The right-hand side of a (sub)formula after R's ``terms()``.

    Attributes
    ----------
    terms : tuple of Term
        In R's order: by degree, then as first written.
    intercept : bool
    variables : tuple of Variable
        Every variable in the order R numbers them (order of first appearance).
    """

    terms: tuple
    intercept: bool
    variables: tuple

    @property
    def labels(self) -> tuple:
        return tuple(t.label for t in self.terms)


@dataclass(frozen=True)
class RandomPart:
    """One random-effects term ``(expr | group)`` after lme4's expansions.

    Attributes
    ----------
    terms : ModelTerms
        The terms of ``expr`` (e.g. intercept and ``Days``).
    group : tuple of str
        The grouping columns; more than one for an interaction ``b:a``.
    source : str
        The term as written, e.g. ``"(1 | batch/cask)"`` or ``"(Days || Subject)"``.
    bar : {"|", "||"}
        The bar it was written with (the parts of ``||`` are each uncorrelated).
    name : str
        The grouping factor's name as lme4 prints it (see :attr:`group_name`).
    """

    terms: ModelTerms
    group: tuple
    source: str
    bar: str = "|"
    name: str = ""

    @property
    def group_name(self) -> str:
        """The grouping factor's name as lme4 prints it: ``"Subject"``, ``"cask:batch"``,
        ``"c:(b:a)"`` for the innermost level of ``a/b/c``."""
        return self.name or ":".join(quote_name(g) for g in self.group)

    def __str__(self) -> str:
        parts = (["1"] if self.terms.intercept else ["0"]) + list(self.terms.labels)
        if self.terms.intercept and len(parts) > 1:
            parts = parts[1:]
        return f"({' + '.join(parts)} | {self.group_name})"


@dataclass(frozen=True)
class Formula:
    """A parsed model formula.

    Attributes
    ----------
    text : str
        The text as given.
    response : Variable
    fixed : ModelTerms
        The fixed-effects part (lme4's ``nobars(formula)``).
    random : tuple of RandomPart
        Random-effects terms as written, after splitting ``||`` and ``/``; lme4's
        reordering by number of levels depends on the data and happens in
        :func:`lmmcore.design.build_design`.
    columns : tuple of str
        Every data column used, in order of first appearance.
    positions : dict
        Column name -> 0-based offset of its first appearance (for error messages).
    """

    text: str
    response: Variable
    fixed: ModelTerms
    random: tuple
    columns: tuple
    positions: dict = field(repr=False, compare=False, hash=False)
    _tree: tuple = field(repr=False, compare=False, hash=False, default=())

    def __str__(self) -> str:
        """The formula in lme4's printed form: ``"Reaction ~ Days + (Days | Subject)"``."""
        lhs, rhs = self._tree
        return f"{_deparse(lhs)} ~ {_deparse(rhs)}"

    @property
    def fixed_text(self) -> str:
        """The formula without its random terms (lme4's ``nobars()``), e.g. for ``lm``."""
        lhs, rhs = self._tree
        stripped = _drop_bars(rhs)
        return f"{_deparse(lhs)} ~ {_deparse(stripped) if stripped is not None else '1'}"

    @property
    def has_random(self) -> bool:
        return bool(self.random)

    @property
    def group_columns(self) -> tuple:
        seen = []
        for part in self.random:
            for g in part.group:
                if g not in seen:
                    seen.append(g)
        return tuple(seen)


def _drop_bars(node):
    """``node`` with its random terms removed (None when nothing is left)."""
    if node[0] == "bar":
        return None
    if node[0] == "binary" and node[1] in ("+", "-"):
        left = _drop_bars(node[2])
        right = _drop_bars(node[3])
        if right is None:
            return left
        if left is None:
            return right if node[1] == "+" else ("unary", "-", right, node[4])
        return ("binary", node[1], left, right, node[4])
    return node


# ---------------------------------------------------------------------------
# From the syntax tree to variables and terms (R's EncodeVars / TermCode)


class _Encoder:
    """Turns a formula right-hand side into R's terms: a list of variable-index sets."""

    def __init__(self, text: str, variables: list | None = None):
        self.text = text
        self.variables: list = variables if variables is not None else []
        self.index: dict = {v.label: i for i, v in enumerate(self.variables)}
        self.intercept = True
        self.parity = True

    def variable(self, node) -> int:
        var = _make_variable(node, self.text)
        i = self.index.get(var.label)
        if i is None:
            i = len(self.variables)
            self.variables.append(var)
            self.index[var.label] = i
        return i

    def encode(self, node) -> list:
        kind = node[0]
        if kind == "num":
            if node[1] == 1:
                self.intercept = self.parity
                return []
            if node[1] == 0:
                self.intercept = not self.parity
                return []
            raise _err(f"the number {format_number(node[1])} cannot be a term; only 0 and 1 "
                       "(no intercept / intercept) can; for arithmetic use I(), e.g. I(2 * x)",
                       node[2], self.text)
        if kind in ("name", "call"):
            return [frozenset([self.variable(node)])]
        if kind == "paren":
            return self.encode(node[1])
        if kind == "bar":
            raise _err("a random-effects term (... | group) can only be added with '+' at the "
                       "top level of the formula", node[4], self.text)
        if kind == "unary":
            if node[1] == "+":
                return self.encode(node[2])
            return self._delete([], node[2])
        op = node[1]
        if op == "+":
            return _union(self.encode(node[2]), self.encode(node[3]))
        if op == "-":
            return self._delete(self.encode(node[2]), node[3])
        if op == ":":
            return self._interact(self.encode(node[2]), self.encode(node[3]), node[4])
        if op == "*":
            left, right = self.encode(node[2]), self.encode(node[3])
            return _union(_union(left, right), self._interact(left, right, node[4]))
        if op == "/":
            # R's %in%: a/b = a + (all of a):b
            left, right = self.encode(node[2]), self.encode(node[3])
            whole = frozenset().union(*left) if left else frozenset()
            return _union(left, self._interact([whole], right, node[4]))
        if op == "^":
            exponent = node[3]
            if exponent[0] != "num" or exponent[1] != int(exponent[1]) or exponent[1] < 1:
                raise _err("the power of a formula term must be a whole number like 2, as in "
                           "(a + b)^2; for a squared column use I(x^2)", node[4], self.text)
            base = self.encode(node[2])
            result = base
            for _ in range(int(min(exponent[1], 64)) - 1):
                grown = _union(result, self._interact(result, base, node[4]))
                if len(grown) == len(result):
                    break
                result = grown
            return result
        raise AssertionError(node)

    def _delete(self, left: list, right_node) -> list:
        self.parity = not self.parity
        right = self.encode(right_node)
        self.parity = not self.parity
        for t in right:
            if not t:
                self.intercept = False
            left = [x for x in left if x != t]
        return left

    def _interact(self, left: list, right: list, pos: int) -> list:
        if len(left) * len(right) > 4 * MAX_TERMS:
            raise _err(f"this interaction expands to more than {MAX_TERMS} terms; write the "
                       "terms you want explicitly", pos, self.text)
        out = dict.fromkeys(a | b for b in right for a in left)
        out = list(out)
        if len(out) > MAX_TERMS:
            raise _err(f"this interaction expands to more than {MAX_TERMS} terms; write the "
                       "terms you want explicitly", pos, self.text)
        return out


def _union(a: list, b: list) -> list:
    seen = set(a)
    out = list(a)
    for t in b:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _make_variable(node, text: str) -> Variable:
    kind = node[0]
    if kind == "name":
        # R labels a non-syntactic name with its back-quotes: "`reaction time`"
        return Variable(quote_name(node[1]), "column", ("col", node[1]), (node[1],))
    # a call
    fname, arg = node[1], node[2]
    label = _deparse(node)
    if fname in FACTOR_TRANSFORMS:
        if arg[0] != "name":
            raise _err(f"{fname}() takes a single column name, e.g. {fname}(Days)",
                       _first_pos(arg), text)
        return Variable(label, "factor", _strip_positions(node), (arg[1],))
    columns: list = []
    _check_arithmetic(arg, text, fname, columns)
    return Variable(label, "numeric", _strip_positions(node), tuple(columns))


def _check_arithmetic(node, text: str, where: str, columns: list):
    """Allow only arithmetic on columns and numbers inside a transform.

    Returns the value of a constant subexpression (None if it uses a column), so that
    a constant that overflows (``9^9^9``) is refused here rather than at fitting.
    """
    value = _check_arithmetic_node(node, text, where, columns)
    if value is not None and not (abs(value) <= _MAX_NUMBER):
        raise _err(f"the constant {_show(_deparse(node))} inside {where}() is too large or "
                   "not a number", _first_pos(node), text)
    return value


def _check_arithmetic_node(node, text: str, where: str, columns: list):
    kind = node[0]
    if kind == "name":
        if node[1] not in columns:
            columns.append(node[1])
        return None
    if kind == "num":
        return node[1]
    if kind == "paren":
        return _check_arithmetic(node[1], text, where, columns)
    if kind == "unary":
        v = _check_arithmetic(node[2], text, where, columns)
        return None if v is None else (-v if node[1] == "-" else v)
    if kind == "binary":
        if node[1] not in ("+", "-", "*", "/", "^"):
            raise _err(f"'{node[1]}' is not arithmetic: inside {where}() use only + - * / ^, "
                       "numbers, columns and parentheses", node[4], text)
        a = _check_arithmetic(node[2], text, where, columns)
        b = _check_arithmetic(node[3], text, where, columns)
        if a is None or b is None:
            return None
        try:
            if node[1] == "+":
                return a + b
            if node[1] == "-":
                return a - b
            if node[1] == "*":
                return a * b
            if node[1] == "/":
                return a / b if b != 0 else float("inf")
            if a == 0 and b < 0:
                return float("inf")
            result = a ** b
            return result if isinstance(result, float) else float("nan")
        except (OverflowError, ZeroDivisionError):
            return float("inf")
    if kind == "call":
        if node[1] in FACTOR_TRANSFORMS:
            raise _err(f"{node[1]}() makes a categorical variable and cannot be used inside "
                       f"{where}()", node[3], text)
        _check_arithmetic(node[2], text, node[1], columns)
        return None
    if kind == "bar":
        raise _err(f"'{node[1]}' cannot be used inside {where}()", node[4], text)
    raise AssertionError(kind)


def _terms(text: str, node, variables: list | None = None,
           response: str | None = None) -> ModelTerms:
    enc = _Encoder(text, variables)
    raw = enc.encode(node) if node is not None else []
    if response is not None and frozenset([0]) in raw:
        raise _err(f"the response {response} also appears as a predictor; remove it from the "
                   "right-hand side", None, text)
    raw = [t for t in raw if t]
    # R sorts terms by degree, keeping the written order within a degree
    raw.sort(key=len)
    variables_t = tuple(enc.variables)
    terms = tuple(Term(tuple(variables_t[i] for i in sorted(t))) for t in raw)
    return ModelTerms(terms, enc.intercept, variables_t)


def _split_sum(node, text: str, sign: str = "+") -> list:
    """The top-level summands of the right-hand side, each as (sign, node)."""
    if node[0] == "binary" and node[1] in ("+", "-"):
        return _split_sum(node[2], text, sign) + _split_sum(node[3], text, node[1]
                                                            if sign == "+" else
                                                            ("-" if node[1] == "+" else "+"))
    if node[0] == "paren" and _contains_bar(node[1]):
        return _split_sum(node[1], text, sign)
    return [(sign, node)]


def _contains_bar(node) -> bool:
    kind = node[0]
    if kind == "bar":
        return True
    if kind == "binary":
        return _contains_bar(node[2]) or _contains_bar(node[3])
    if kind in ("unary",):
        return _contains_bar(node[2])
    if kind == "paren":
        return _contains_bar(node[1])
    return False


def _group_chain(node) -> list:
    """``a/b:c`` -> [("a",), ("b", "c")]: '/' separates nesting levels."""
    if node[0] == "binary" and node[1] == "/":
        return _group_chain(node[2]) + [_group_names(node[3])]
    return [_group_names(node)]


def _group_names(node) -> tuple:
    if node[0] == "name":
        return (node[1],)
    if node[0] == "binary" and node[1] == ":":
        return _group_names(node[2]) + _group_names(node[3])
    raise AssertionError(node)


def _random_parts(text: str, bar) -> list:
    op, lhs, group_node = bar[1], bar[2], bar[3]
    source = _deparse(bar)
    chain = _group_chain(group_node)
    # lme4's expandSlash: a/b/c -> c:(b:a), b:a, a (innermost first), named as lme4
    # deparses them: the inner interaction of a deeper level is in parentheses
    groups, names = [], []
    for k in range(len(chain), 0, -1):
        columns: tuple = ()
        for level in reversed(chain[:k]):
            columns += level
        groups.append(columns)
    name = ""
    for level in chain:
        here = ":".join(quote_name(g) for g in level)
        name = here if not name else f"{here}:({name})" if ":" in name else f"{here}:{name}"
        names.append(name)
    names.reverse()
    terms = _terms(text, lhs)
    if not terms.terms and not terms.intercept:
        raise _err(f"the random term {source} has no columns: put 1 (intercept) or a column "
                   "before the bar", bar[4], text)
    if op == "||":
        # lme4's expandDoubleVerts: one term for the intercept, one per term of expr
        pieces = []
        if terms.intercept:
            pieces.append(ModelTerms((), True, terms.variables))
        for t in terms.terms:
            used = tuple(v for v in terms.variables if v in t.variables)
            pieces.append(ModelTerms((t,), False, used))
    else:
        pieces = [terms]
    return [RandomPart(piece, g, source, op, nm) for g, nm in zip(groups, names)
            for piece in pieces]


def _positions(node, out: dict) -> None:
    kind = node[0]
    if kind == "name":
        out.setdefault(node[1], node[2])
    elif kind == "call":
        _positions(node[2], out)
    elif kind == "paren":
        _positions(node[1], out)
    elif kind == "unary":
        _positions(node[2], out)
    elif kind == "binary":
        _positions(node[2], out)
        _positions(node[3], out)
    elif kind == "bar":
        _positions(node[2], out)
        _positions(node[3], out)


def parse_formula(text: str) -> Formula:
    """Parse an lme4 model formula without evaluating anything.

    Parameters
    ----------
    text : str
        E.g. ``"Reaction ~ Days + (Days | Subject)"``; at most ``MAX_LENGTH``
        characters and ``MAX_DEPTH`` levels of nesting.

    Returns
    -------
    Formula

    Raises
    ------
    lmmcore.errors.FormulaError
        With ``position`` (0-based) and a message saying what was expected there.

    Examples
    --------
    >>> f = parse_formula("weight ~ Time * Diet + (Time | Chick)")
    >>> f.fixed.labels
    ('Time', 'Diet', 'Time:Diet')
    >>> str(f)
    'weight ~ Time * Diet + (Time | Chick)'
    """
    if isinstance(text, Formula):
        return text
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be text, not {type(text).__name__}", None, None)
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is {len(text):,} characters long; the limit is "
                           f"{MAX_LENGTH:,}: write a shorter formula", MAX_LENGTH, text[:100])
    if not text.strip():
        raise FormulaError("the formula is empty: write one like 'Reaction ~ Days + (1 | "
                           "Subject)'", 0, text)
    return _parse_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Formula:
    """parse_formula's work; a Formula is immutable, so a refit with the same text (the
    app refits on every widget change) reuses the parse."""
    lhs_node, rhs_node = _Parser(text).formula()

    if _contains_bar(lhs_node):
        raise _err("the response cannot be a random-effects term", lhs_node[-1], text)
    if lhs_node[0] not in ("name", "call"):
        raise _err("the response must be one column or a transform of it, e.g. Reaction or "
                   "log(Reaction)", _first_pos(lhs_node), text)
    response = _make_variable(lhs_node, text)
    if response.kind == "factor":
        raise _err("the response must be numeric; factor() cannot be used on it",
                   lhs_node[-1], text)

    fixed_nodes, bars = [], []
    for sign, node in _split_sum(rhs_node, text):
        if node[0] == "bar":
            if sign == "-":
                raise _err("a random-effects term cannot be subtracted; remove it instead",
                           node[4], text)
            bars.append(node)
        elif _contains_bar(node):
            raise _err("a random-effects term (... | group) can only be added with '+' at the "
                       "top level of the formula", _bar_pos(node), text)
        else:
            fixed_nodes.append((sign, node))
    fixed_node = None
    for sign, node in fixed_nodes:
        if fixed_node is None:
            fixed_node = node if sign == "+" else ("unary", "-", node, node[-1])
        else:
            fixed_node = ("binary", sign, fixed_node, node, node[-1])

    fixed = _terms(text, fixed_node, [response], response.label)
    fixed = ModelTerms(fixed.terms, fixed.intercept, fixed.variables[1:])
    random = []
    for bar in bars:
        random.extend(_random_parts(text, bar))

    positions: dict = {}
    _positions(lhs_node, positions)
    _positions(rhs_node, positions)
    columns = tuple(sorted(positions, key=positions.get))
    for bar in bars:
        found: dict = {}
        _positions(bar[3], found)
        for g, pos in found.items():
            if g in response.columns:
                raise _err(f"the response {g} cannot also be a grouping factor", pos, text)
    return Formula(text, response, fixed, tuple(random), columns, positions,
                   (lhs_node, rhs_node))


def _first_pos(node) -> int:
    """The position of the leftmost token of ``node``."""
    kind = node[0]
    if kind == "binary":
        return _first_pos(node[2])
    if kind == "paren":
        return node[2]
    return node[3] if kind in ("call", "unary") else node[-1]


def _bar_pos(node) -> int:
    if node[0] == "bar":
        return node[4]
    for child in node[1:]:
        if isinstance(child, tuple) and _contains_bar(child):
            return _bar_pos(child)
    return node[-1]


# ---------------------------------------------------------------------------
# The model builder's formula (app) and back


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
        Response column.
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
    text = f"{quote_name(response)} ~ {rhs}"
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
        full = _Encoder(f.text, list(f.fixed.variables[:len(fixed)]))
        expected = full.encode(_star([("name", c, 0) for c in fixed]))
        if sorted(map(sorted, (frozenset(v.label for v in t.variables)
                               for t in f.fixed.terms)), key=str) != sorted(
                map(sorted, (frozenset(full.variables[i].label for i in t) for t in expected)),
                key=str):
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


def _star(nodes):
    node = nodes[0]
    for other in nodes[1:]:
        node = ("binary", "*", node, other, 0)
    return node


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
