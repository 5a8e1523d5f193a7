"""The formula grammar: lme4's model formula read by our own parser, never evaluated.

``parse_formula("Reaction ~ Days + (Days | Subject)")`` turns the text into a
:class:`Formula`: the response, the fixed-effects terms with R's ``terms()`` semantics
(``*``, ``^``, ``/``, ``-``, intercept flag, terms ordered by degree) and the random
parts ``(expr | group)`` after lme4's expansions (``||`` into separate terms, ``a/b``
into ``b:a`` and ``a``).  Only the functions of :data:`TRANSFORMS` are accepted
(``log``, ``log2``, ``log10``, ``exp``, ``sqrt``, ``abs``, ``scale``, ``center``,
``factor()``, ``C()``, ``I()`` arithmetic); nothing in the text is ever run as code.

The grammar follows R's operator precedence, lowest first::

    formula := sum '~' sum
    bar     := sum (('|' | '||') group)?          # only directly inside '( )'
    sum     := prod (('+' | '-') prod)*
    prod    := colon (('*' | '/') colon)*
    colon   := unary (':' unary)*
    unary   := ('-' | '+') unary | power
    power   := primary ('^' unary)?
    primary := NAME | NUMBER | NAME '(' sum ')' | 'cbind(' sum ',' sum ')' | '(' bar ')'

The parse is one tree of :class:`Node` (``Formula.tree``), printed by :func:`deparse`
as R's ``deparse()`` prints a formula; the variables, terms and random parts are read
from it.  Errors are :class:`lmmcore.errors.FormulaError` with the 0-based ``position``
of the problem; the message says "at character N" with N counted from 1, as a student
counts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmmcore.errors import FormulaError

__all__ = [
    "Formula", "ModelTerms", "RandomPart", "Term", "Variable", "Node", "Transform",
    "parse_formula", "deparse", "deparse_lines", "deparse_call_lines", "format_number",
    "quote_name", "cbind_parts", "CBIND", "cbind_response", "response_text",
    "MAX_LENGTH", "MAX_DEPTH", "MAX_OPERATORS", "TRANSFORMS", "ARITHMETIC",
]

MAX_LENGTH = 2000
MAX_DEPTH = 32
# A cap on terms produced by '*' and '^' so that (a+b+...+z)^10 fails instead of
# expanding to millions of terms.
MAX_TERMS = 500
# A cap on binary operators: a chain a + b + c ... is a tree as deep as it is long, and
# every walk of the tree recurses, so x+x+...+x (1000 terms in 2000 characters) would
# exhaust Python's stack.  300 is more terms than any table has columns.
MAX_OPERATORS = 300
#: ``cbind(successes, failures)``: only as the response (of a binomial glmer).
CBIND = "cbind"

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
# The syntax tree: one node type


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a formula's syntax tree (the grammar's only tree type).

    ==========  ==================================  ==================================
    ``kind``    ``value``                           ``args``
    ==========  ==================================  ==================================
    "name"      the column name, without quotes     ()
    "num"       the number (float)                  ()
    "call"      the function (a TRANSFORMS key)     the arguments (one for each
                                                    function today; a call such as
                                                    cbind(a, b) would have two)
    "paren"     None                                (inner,)
    "unary"     "+" or "-"                          (operand,)
    "binary"    "+", "-", "*", "/", ":" or "^"      (left, right)
    "bar"       "|" or "||"                         (expr, group): a random term,
                                                    parentheses included
    ==========  ==================================  ==================================

    ``pos`` is the 0-based offset in the formula text of the node's own token (the name,
    number, function name, operator, or the "(" of a paren or bar), for error messages.
    It takes no part in ``==`` and ``hash``: nodes written alike are equal.

    To walk a tree, recurse on ``args`` (leaves have none) or iterate :meth:`walk`;
    ``str(node)`` is R's deparse.  A grouping factor (the second argument of a bar) is
    names joined by ``:`` and ``/`` binary nodes.
    """

    kind: str
    value: object = None
    args: tuple = ()
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return deparse(self)

    def walk(self):
        """The nodes of this tree, this one first, then each argument's, left to right."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.args))


# ---------------------------------------------------------------------------
# The printer: R's deparse()


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


def quote_name(name) -> str:
    """``name`` as it must be written in a formula: back-quoted unless a plain R name.

    The one quoting rule of the project: every formula written from column names
    (the app's menus, pooling, teaching) quotes them with this function.
    """
    name = str(name)
    if _SYNTACTIC.match(name) and name != "." and not _DUNDER.search(name) \
            and name not in _R_RESERVED:
        return name
    return f"`{name}`"


def cbind_response(text):
    """The ``cbind(successes, failures)`` response written as ``text`` (a Variable of kind
    "cbind", its ``columns`` the columns it reads), or None for anything else."""
    text = str(text).strip()
    if not text.startswith(CBIND + "("):
        return None
    variable = parse_formula(f"{text} ~ 1").response
    return variable if variable.kind == "cbind" else None


def response_text(response) -> str:
    """A response as a formula's left side: a column name quoted by :func:`quote_name`,
    or a ``cbind(successes, failures)`` response as R deparses it."""
    variable = cbind_response(response)
    return deparse(variable.expr) if variable is not None else quote_name(response)


_R_RESERVED = frozenset(("if", "else", "repeat", "while", "function", "for", "next", "break",
                         "in", "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA"))
_SPACED = {"+", "-", "*", "|", "||", "~"}


def deparse(node: Node) -> str:
    """A tree as R's ``deparse()`` prints it: ``a + b``, ``a:b``, ``x^2``, ``(1 | g)``,
    back-quotes around non-syntactic names, numbers as R prints them."""
    return deparse_lines(node, None)[0]


def deparse_lines(node: Node, cutoff: int | None = 60) -> list:
    """R's ``deparse(x, width.cutoff = cutoff)``: the printed tree in lines.

    As R's ``deparse.c``: after a spaced binary operator (``+ - * | || ~``) or a call's
    ``, ``, a line already longer than ``cutoff`` ends, and the rest of that operand is
    indented four spaces more.  ``cutoff=None`` gives one line.
    """
    writer = _Writer(cutoff)
    writer.node(node)
    writer.lines.append("".join(writer.line))
    return writer.lines


def deparse_call_lines(function: str, args, cutoff: int | None = 60) -> list:
    """R's ``deparse()`` of a call with named arguments, in lines, e.g.
    ``lm(formula = y ~ x, data = d)`` as summary.lm's ``Call:`` shows it.

    ``args``: ``(name, value)`` pairs, a value being a :class:`Node` (a formula's
    :attr:`Formula.node`) or text printed as it is.
    """
    writer = _Writer(cutoff)
    writer.call(function, list(args))
    writer.lines.append("".join(writer.line))
    return writer.lines


class _Writer:
    """deparse's line buffer (R's LocalParseData: len, indent, startline)."""

    def __init__(self, cutoff: int | None):
        self.cutoff = cutoff
        self.lines: list = []
        self.line: list = []
        self.len = 0
        self.indent = 0
        self.startline = True

    def put(self, text: str) -> None:
        if self.startline:
            self.startline = False
            tab = "".join("    " if i <= 4 else "  " for i in range(1, self.indent + 1))
            self.line.append(tab)
            self.len += len(tab)
        self.line.append(text)
        self.len += len(text)

    def linebreak(self, broke: bool) -> bool:
        if self.cutoff is not None and self.len > self.cutoff:
            if not broke:
                broke = True
                self.indent += 1
            self.lines.append("".join(self.line))
            self.line, self.len, self.startline = [], 0, True
        return broke

    def node(self, node: Node) -> None:
        kind = node.kind
        if kind == "name":
            self.put(quote_name(node.value))
        elif kind == "num":
            self.put(format_number(node.value))
        elif kind == "call":
            self.call(node.value, [(None, arg) for arg in node.args])
        elif kind in ("paren", "bar"):
            self.put("(")
            if kind == "paren":
                self.node(node.args[0])
            else:
                self._binary(node.value, node.args)
            self.put(")")
        elif kind == "unary":
            self.put(node.value)
            self.node(node.args[0])
        elif kind == "binary":
            self._binary(node.value, node.args)
        else:
            raise AssertionError(kind)

    def call(self, function: str, args: list) -> None:
        """``function(tag = arg, ...)``; an arg is a Node or text printed as it is."""
        self.put(f"{function}(")
        broke = False
        for k, (tag, arg) in enumerate(args):
            if k:
                self.put(", ")
                broke = self.linebreak(broke)
            if tag is not None:
                self.put(f"{tag} = ")
            if isinstance(arg, Node):
                self.node(arg)
            else:
                self.put(str(arg))
        if broke:
            self.indent -= 1
        self.put(")")

    def _binary(self, op: str, args: tuple) -> None:
        self.node(args[0])
        if op not in _SPACED:
            self.put(op)
            self.node(args[1])
            return
        self.put(f" {op} ")
        broke = self.linebreak(False)
        self.node(args[1])
        if broke:
            self.indent -= 1


# ---------------------------------------------------------------------------
# The functions a formula may call: name, meaning and implementation in one table


def _identity(x):
    return x


def _mean_sd(values) -> tuple:
    """R's ``scale()``: mean and SD (n - 1) of the non-missing values."""
    values = np.broadcast_to(values, (np.size(values),))
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else np.nan
    sd = float(finite.std(ddof=1)) if finite.size > 1 else np.nan
    return mean, sd


def _mean_one(values) -> tuple:
    """``center()``: the mean of the non-missing values, divisor 1."""
    return _mean_sd(values)[0], 1.0


@dataclass(frozen=True)
class Transform:
    """A function the formula language allows.

    Attributes
    ----------
    name : str
    kind : {"numeric", "factor"}
        ``"numeric"``: the call is a numeric variable computed from its argument's
        arithmetic; ``"factor"``: a categorical variable from one column (its levels are
        coded by :mod:`lmmcore.design`).
    apply : callable, optional
        Elementwise numpy function of the argument's values (numeric transforms).
    learn : callable, optional
        For transforms with constants learned from the data at fitting (``scale``,
        ``center``): values -> ``(shift, divisor)``; the result is
        ``(x - shift) / divisor`` with the fitted constants, on new data too.
    """

    name: str
    kind: str
    apply: Callable | None = None
    learn: Callable | None = None


TRANSFORMS = {t.name: t for t in (
    Transform("log", "numeric", np.log),
    Transform("log2", "numeric", np.log2),
    Transform("log10", "numeric", np.log10),
    Transform("exp", "numeric", np.exp),
    Transform("sqrt", "numeric", np.sqrt),
    Transform("abs", "numeric", np.abs),
    Transform("scale", "numeric", learn=_mean_sd),
    Transform("center", "numeric", learn=_mean_one),
    Transform("factor", "factor"),
    Transform("C", "factor"),
    Transform("I", "numeric", _identity),
)}

# The arithmetic allowed inside a transform (numpy: an overflow is inf, not an error).
ARITHMETIC = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
              "^": np.power}


# ---------------------------------------------------------------------------
# The parser: text -> Node tree


_BINARY_LEVELS = (("+", "-"), ("*", "/"), (":",))


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.operators = 0

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

    def _binary_node(self, op: _Token, left: Node, right: Node) -> Node:
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise _err(f"the formula has more than {MAX_OPERATORS} operators; write a shorter "
                       "formula", op.pos, self.text)
        return Node("binary", op.text, (left, right), op.pos)

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
            node = self._binary_node(op, node, self._binary(level + 1, op))
        return node

    def unary(self, after):
        t = self.tok
        if t.kind == "op" and t.text in ("-", "+"):
            self._enter(t.pos)
            self._advance()
            node = Node("unary", t.text, (self.unary(t),), t.pos)
            self.depth -= 1
            return node
        return self.power(after)

    def power(self, after):
        node = self.primary(after)
        if self.tok.kind == "op" and self.tok.text == "^":
            op = self._advance()
            self._enter(op.pos)
            node = self._binary_node(op, node, self.unary(op))
            self.depth -= 1
        return node

    def primary(self, after):
        t = self.tok
        if t.kind == "number":
            self._advance()
            return Node("num", t.value, (), t.pos)
        if t.kind == "name":
            self._advance()
            if self.tok.kind == "(":
                return self.call(t)
            return Node("name", t.text, (), t.pos)
        if t.kind == "(":
            self._enter(t.pos)
            self._advance()
            inner = self.sum(t)
            if self.tok.kind == "op" and self.tok.text in ("|", "||"):
                bar = self._advance()
                group = self.group(bar)
                node = Node("bar", bar.text, (inner, group), t.pos)
            else:
                node = Node("paren", None, (inner,), t.pos)
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
        if fname == CBIND and name_tok.value != "quoted":
            return self._cbind(name_tok)
        if name_tok.value == "quoted" or fname not in TRANSFORMS:
            raise _err(f"'{_show(fname)}(...)' is not an allowed function; allowed are "
                       + ", ".join(f"{f}()" for f in TRANSFORMS), name_tok.pos, self.text)
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
        return Node("call", fname, (arg,), name_tok.pos)

    def _cbind(self, name_tok: _Token) -> Node:
        """``cbind(successes, failures)``: two arithmetic arguments (a binomial response)."""
        open_tok = self._advance()
        self._enter(open_tok.pos)
        args = []
        for k in range(2):
            if self.tok.kind in (")", ",", "end"):
                raise _err("cbind() needs two columns or expressions: cbind(successes, "
                           "failures)", self.tok.pos, self.text)
            args.append(self.sum(open_tok))
            if k == 0:
                if self.tok.kind != ",":
                    raise _err("cbind() needs two arguments separated by a comma: "
                               "cbind(successes, failures)", self.tok.pos, self.text)
                self._advance()
        if self.tok.kind != ")":
            if self.tok.kind == ",":
                raise _err("cbind() takes exactly two arguments: cbind(successes, failures)",
                           self.tok.pos, self.text)
            raise _err(f"expected ')' to close cbind(, found {self._describe(self.tok)}",
                       self.tok.pos, self.text)
        self._advance()
        self.depth -= 1
        return Node("call", CBIND, tuple(args), name_tok.pos)

    def group(self, bar: _Token):
        """A grouping factor: names joined by ':' (interaction) and '/' (nesting)."""
        node = self._group_interaction(bar)
        while self.tok.kind == "op" and self.tok.text == "/":
            op = self._advance()
            node = self._binary_node(op, node, self._group_interaction(op))
        return node

    def _group_interaction(self, after: _Token):
        node = self._group_name(after)
        while self.tok.kind == "op" and self.tok.text == ":":
            op = self._advance()
            node = self._binary_node(op, node, self._group_name(op))
        return node

    def _group_name(self, after: _Token):
        t = self.tok
        if t.kind == "name" and self.tokens[self.i + 1].kind != "(":
            self._advance()
            return Node("name", t.text, (), t.pos)
        if t.kind == "end":
            raise _err(f"the formula stops too early: expected a grouping column after "
                       f"'{after.text}'", t.pos, self.text)
        raise _err(f"expected a grouping column name after '{after.text}', found "
                   f"{self._describe(t)} (a grouping factor is a column, or columns joined by "
                   "':' or '/')", t.pos, self.text)


# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# The public objects


@dataclass(frozen=True)
class Variable:
    """One variable of a model, as R's ``terms()`` lists it.

    Attributes
    ----------
    label : str
        R's deparsed text: ``"Days"``, ``"log(x)"``, ``"I(Days^2)"``, ``"factor(Days)"``.
    kind : {"column", "factor", "numeric", "cbind"}
        ``"column"``: a bare column (numeric or categorical according to the data);
        ``"factor"``: ``factor(x)`` / ``C(x)``, always categorical; ``"numeric"``: an
        arithmetic transform, always numeric; ``"cbind"``: the response
        ``cbind(successes, failures)`` of a binomial model (its parts: :func:`cbind_parts`).
    expr : Node
        The variable's syntax tree: a ``"name"`` node for a column, a ``"call"`` node
        for a transform (positions do not count in ``==``).
    columns : tuple of str
        Data columns the variable reads.
    """

    label: str
    kind: str
    expr: Node
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
    tree : tuple of Node
        ``(lhs, rhs)``: the syntax trees of the two sides of ``~`` as written (see
        :class:`Node`).  :attr:`node` joins them into one ``~`` node (``str(formula)``
        prints it); :attr:`expanded_tree` is lme4's stored form, ``||`` expanded.

    Notes
    -----
    Two formulas are equal when their texts are; a Formula pickles as its text and is
    parsed again when unpickled.
    """

    text: str
    response: Variable = field(compare=False)
    fixed: ModelTerms = field(compare=False)
    random: tuple = field(compare=False)
    columns: tuple = field(compare=False)
    positions: dict = field(repr=False, compare=False, hash=False)
    tree: tuple = field(repr=False, compare=False, hash=False, default=())

    def __reduce__(self):
        return parse_formula, (self.text,)

    def __str__(self) -> str:
        """The formula in lme4's printed form: ``"Reaction ~ Days + (Days | Subject)"``."""
        return deparse(self.node)

    @property
    def node(self) -> Node:
        """The whole formula as written, as one ``~`` node."""
        lhs, rhs = self.tree
        return Node("binary", "~", (lhs, rhs), lhs.pos)

    @property
    def fixed_text(self) -> str:
        """The formula without its random terms (lme4's ``nobars()``), e.g. for ``lm``."""
        lhs, rhs = self.tree
        stripped = _drop_bars(rhs)
        if stripped is None:
            stripped = Node("num", 1.0, (), rhs.pos)
        return deparse(Node("binary", "~", (lhs, stripped), lhs.pos))

    @property
    def expanded_tree(self) -> Node:
        """The formula as lme4 stores it (``formula(fit)``), as one ``~`` node: each
        ``(x || g)`` expanded as lme4's ``expandDoubleVerts`` does, into
        ``((1 | g) + (0 + x | g))``."""
        lhs, rhs = self.tree
        return Node("binary", "~", (lhs, _expand_double_bars(rhs, self.text)), lhs.pos)

    @property
    def expanded_text(self) -> str:
        """:attr:`expanded_tree` printed: what the summary's ``Formula:`` line and anova's
        model lines show."""
        return deparse(self.expanded_tree)

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


def _drop_bars(node: Node) -> Node | None:
    """``node`` with its random terms removed (None when nothing is left)."""
    if node.kind == "bar":
        return None
    if node.kind == "binary" and node.value in ("+", "-"):
        left = _drop_bars(node.args[0])
        right = _drop_bars(node.args[1])
        if right is None:
            return left
        if left is None:
            return right if node.value == "+" else Node("unary", "-", (right,), node.pos)
        return Node("binary", node.value, (left, right), node.pos)
    return node


# ---------------------------------------------------------------------------
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

    def variable(self, node: Node) -> int:
        var = _make_variable(node, self.text)
        i = self.index.get(var.label)
        if i is None:
            i = len(self.variables)
            self.variables.append(var)
            self.index[var.label] = i
        return i

    def encode(self, node: Node) -> list:
        kind = node.kind
        if kind == "num":
            if node.value == 1:
                self.intercept = self.parity
                return []
            if node.value == 0:
                self.intercept = not self.parity
                return []
            raise _err(f"the number {format_number(node.value)} cannot be a term; only 0 and 1 "
                       "(no intercept / intercept) can; for arithmetic use I(), e.g. I(2 * x)",
                       node.pos, self.text)
        if kind in ("name", "call"):
            return [frozenset([self.variable(node)])]
        if kind == "paren":
            return self.encode(node.args[0])
        if kind == "bar":
            raise _err("a random-effects term (... | group) can only be added with '+' at the "
                       "top level of the formula", node.pos, self.text)
        if kind == "unary":
            if node.value == "+":
                return self.encode(node.args[0])
            return self._delete([], node.args[0])
        op, (left_node, right_node), pos = node.value, node.args, node.pos
        if op == "+":
            return _union(self.encode(left_node), self.encode(right_node))
        if op == "-":
            return self._delete(self.encode(left_node), right_node)
        if op == ":":
            return self._interact(self.encode(left_node), self.encode(right_node), pos)
        if op == "*":
            left, right = self.encode(left_node), self.encode(right_node)
            return _union(_union(left, right), self._interact(left, right, pos))
        if op == "/":
            # R's %in%: a/b = a + (all of a):b
            left, right = self.encode(left_node), self.encode(right_node)
            whole = frozenset().union(*left) if left else frozenset()
            return _union(left, self._interact([whole], right, pos))
        if op == "^":
            exponent = right_node
            if exponent.kind != "num" or exponent.value != int(exponent.value) \
                    or exponent.value < 1:
                raise _err("the power of a formula term must be a whole number like 2, as in "
                           "(a + b)^2; for a squared column use I(x^2)", pos, self.text)
            base = self.encode(left_node)
            result = base
            for _ in range(int(min(exponent.value, 64)) - 1):
                grown = _union(result, self._interact(result, base, pos))
                if len(grown) == len(result):
                    break
                result = grown
            return result
        raise AssertionError(node)

    def _delete(self, left: list, right_node: Node) -> list:
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


def _make_variable(node: Node, text: str) -> Variable:
    if node.kind == "call" and node.value == CBIND:
        raise _err("cbind() can only be the response (left of '~')", node.pos, text)
    if node.kind == "name":
        # R labels a non-syntactic name with its back-quotes: "`reaction time`"
        return Variable(quote_name(node.value), "column", node, (node.value,))
    # a call
    fname, (arg,) = node.value, node.args
    label = deparse(node)
    if TRANSFORMS[fname].kind == "factor":
        if arg.kind != "name":
            raise _err(f"{fname}() takes a single column name, e.g. {fname}(Days)",
                       _first_pos(arg), text)
        return Variable(label, "factor", node, (arg.value,))
    columns: list = []
    _check_arithmetic(arg, text, fname, columns)
    return Variable(label, "numeric", node, tuple(columns))


def _cbind_variable(node: Node, text: str) -> Variable:
    """The response ``cbind(successes, failures)``: kind ``"cbind"``; its two numeric
    Variables come from :func:`cbind_parts`."""
    columns: list = []
    for arg in node.args:
        _check_arithmetic(arg, text, CBIND, columns)
    return Variable(deparse(node), "cbind", node, tuple(columns))


def cbind_parts(variable: Variable) -> tuple:
    """(successes, failures) of a ``cbind`` response, each a numeric Variable."""
    parts = []
    for arg in variable.expr.args:
        columns: list = []
        _check_arithmetic(arg, deparse(variable.expr), CBIND, columns)
        kind = "column" if arg.kind == "name" else "numeric"
        label = quote_name(arg.value) if arg.kind == "name" else deparse(arg)
        parts.append(Variable(label, kind, arg, tuple(columns)))
    return tuple(parts)


def _check_arithmetic(node: Node, text: str, where: str, columns: list):
    """Allow only arithmetic on columns and numbers inside a transform ``where()``;
    collect the columns it reads into ``columns``.

    Returns the value of a constant subexpression (None if it uses a column), so that
    a constant that overflows (``9^9^9``) is refused here rather than at fitting.
    """
    kind = node.kind
    value = None
    if kind == "name":
        if node.value not in columns:
            columns.append(node.value)
    elif kind == "num":
        value = node.value
    elif kind == "paren":
        value = _check_arithmetic(node.args[0], text, where, columns)
    elif kind == "unary":
        v = _check_arithmetic(node.args[0], text, where, columns)
        value = None if v is None else (-v if node.value == "-" else v)
    elif kind == "binary":
        if node.value not in ARITHMETIC:
            raise _err(f"'{node.value}' is not arithmetic: inside {where}() use only + - * / ^, "
                       "numbers, columns and parentheses", node.pos, text)
        a = _check_arithmetic(node.args[0], text, where, columns)
        b = _check_arithmetic(node.args[1], text, where, columns)
        if a is not None and b is not None:
            with np.errstate(all="ignore"):
                value = float(ARITHMETIC[node.value](np.float64(a), np.float64(b)))
    elif kind == "call" and node.value == CBIND:
        raise _err(f"cbind() cannot be used inside {where}()", node.pos, text)
    elif kind == "call":
        if TRANSFORMS[node.value].kind == "factor":
            raise _err(f"{node.value}() makes a categorical variable and cannot be used inside "
                       f"{where}()", node.pos, text)
        for arg in node.args:
            _check_arithmetic(arg, text, node.value, columns)
    elif kind == "bar":
        raise _err(f"'{node.value}' cannot be used inside {where}()", node.pos, text)
    else:
        raise AssertionError(kind)
    if value is not None and not (abs(value) <= _MAX_NUMBER):
        raise _err(f"the constant {_show(deparse(node))} inside {where}() is too large or "
                   "not a number", _first_pos(node), text)
    return value


def _terms(text: str, node: Node | None, variables: list | None = None,
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


def _split_sum(node: Node, text: str, sign: str = "+") -> list:
    """The top-level summands of the right-hand side, each as (sign, node)."""
    if node.kind == "binary" and node.value in ("+", "-"):
        right_sign = node.value if sign == "+" else ("-" if node.value == "+" else "+")
        return _split_sum(node.args[0], text, sign) + _split_sum(node.args[1], text, right_sign)
    if node.kind == "paren" and _contains_bar(node.args[0]):
        return _split_sum(node.args[0], text, sign)
    return [(sign, node)]


def _contains_bar(node: Node) -> bool:
    """Whether a random term sits in ``node`` outside any function call (one inside a
    call is refused by the call's own check)."""
    if node.kind == "bar":
        return True
    if node.kind in ("binary", "unary", "paren"):
        for arg in node.args:   # a loop, not any(generator): one stack frame per level
            if _contains_bar(arg):
                return True
    return False


def _group_chain(node: Node) -> list:
    """``a/b:c`` -> [("a",), ("b", "c")]: '/' separates nesting levels."""
    if node.kind == "binary" and node.value == "/":
        return _group_chain(node.args[0]) + [_group_names(node.args[1])]
    return [_group_names(node)]


def _group_names(node: Node) -> tuple:
    if node.kind == "name":
        return (node.value,)
    if node.kind == "binary" and node.value == ":":
        return _group_names(node.args[0]) + _group_names(node.args[1])
    raise AssertionError(node)


def _random_parts(text: str, bar: Node) -> list:
    op, (lhs, group_node) = bar.value, bar.args
    source = deparse(bar)
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
                   "before the bar", bar.pos, text)
    if op == "||":
        pieces = [_terms(text, piece.args[0]) for piece in _double_bar_pieces(bar, text, terms)]
    else:
        pieces = [terms]
    # lme4 expands '||' first, then '/' in each piece (findbars' expandSlash)
    return [RandomPart(piece, g, source, op, nm) for piece in pieces
            for g, nm in zip(groups, names)]


def _double_bar_pieces(bar: Node, text: str, terms: ModelTerms | None = None) -> list:
    """lme4's expandDoubleVerts: ``(x + z || g)`` -> ``(1 | g)``, ``(0 + x | g)``,
    ``(0 + z | g)``: one ``|`` term for the intercept and one per term of ``x + z``
    (``terms``: those of ``x + z``, when already known)."""
    if terms is None:
        terms = _terms(text, bar.args[0])
    group, pos = bar.args[1], bar.pos
    pieces = [Node("bar", "|", (Node("num", 1.0, (), pos), group), pos)] if terms.intercept \
        else []
    for t in terms.terms:
        term = t.variables[0].expr
        for v in t.variables[1:]:
            term = Node("binary", ":", (term, v.expr), pos)
        pieces.append(Node("bar", "|", (Node("binary", "+", (Node("num", 0.0, (), pos), term),
                                              pos), group), pos))
    return pieces


def _expand_double_bars(node: Node, text: str) -> Node:
    """``node`` with each ``(... || g)`` replaced by its ``|`` pieces in parentheses, as
    lme4 stores the formula: ``((1 | g) + (0 + x | g))``."""
    if node.kind == "bar" and node.value == "||":
        pieces = _double_bar_pieces(node, text)
        inner = pieces[0]
        for piece in pieces[1:]:
            inner = Node("binary", "+", (inner, piece), node.pos)
        return Node("paren", None, (inner,), node.pos)
    if node.kind in ("binary", "paren") and _contains_bar(node):
        args = []
        for arg in node.args:
            args.append(_expand_double_bars(arg, text))
        return Node(node.kind, node.value, tuple(args), node.pos)
    return node


def _positions(node: Node, out: dict) -> None:
    """Column name -> offset of its first appearance in ``node``."""
    for n in node.walk():
        if n.kind == "name":
            out.setdefault(n.value, n.pos)


def parse_formula(text: str) -> Formula:
    """Parse an lme4 model formula without evaluating anything.

    Parameters
    ----------
    text : str
        E.g. ``"Reaction ~ Days + (Days | Subject)"``; at most ``MAX_LENGTH``
        characters, ``MAX_DEPTH`` levels of nesting and ``MAX_OPERATORS`` operators.

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
        raise _err("the response cannot be a random-effects term", lhs_node.pos, text)
    if lhs_node.kind not in ("name", "call"):
        raise _err("the response must be one column or a transform of it, e.g. Reaction or "
                   "log(Reaction)", _first_pos(lhs_node), text)
    response = (_cbind_variable(lhs_node, text) if lhs_node.kind == "call"
                and lhs_node.value == CBIND else _make_variable(lhs_node, text))
    if response.kind == "factor":
        raise _err("the response must be numeric; factor() cannot be used on it",
                   lhs_node.pos, text)

    fixed_nodes, bars = [], []
    for sign, node in _split_sum(rhs_node, text):
        if node.kind == "bar":
            if sign == "-":
                raise _err("a random-effects term cannot be subtracted; remove it instead",
                           node.pos, text)
            bars.append(node)
        elif _contains_bar(node):
            raise _err("a random-effects term (... | group) can only be added with '+' at the "
                       "top level of the formula", _bar_pos(node), text)
        else:
            fixed_nodes.append((sign, node))
    fixed_node = None
    for sign, node in fixed_nodes:
        if fixed_node is None:
            fixed_node = node if sign == "+" else Node("unary", "-", (node,), node.pos)
        else:
            fixed_node = Node("binary", sign, (fixed_node, node), node.pos)

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
        _positions(bar.args[1], found)
        for g, pos in found.items():
            if g in response.columns:
                raise _err(f"the response {g} cannot also be a grouping factor", pos, text)
    return Formula(text, response, fixed, tuple(random), columns, positions,
                   (lhs_node, rhs_node))


def _first_pos(node: Node) -> int:
    """The position of the leftmost token of ``node``."""
    while node.kind == "binary":
        node = node.args[0]
    return node.pos


def _bar_pos(node: Node) -> int:
    if node.kind == "bar":
        return node.pos
    for child in node.args:
        if _contains_bar(child):
            return _bar_pos(child)
    return node.pos
