"""A formula is read by lmmcore's grammar only: hostile text is refused quickly and runs nothing."""

import builtins
import importlib.util
import contextlib
import os
import subprocess
import time

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import lmmcore
from lmmcore import FormulaError, LmmError

SENTINEL = "/tmp/pooling-explorer-pwned"

HOSTILE = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"y ~ __import__('os').system('touch {SENTINEL}')",
    "y ~ open('/etc/passwd').read()",
    "y ~ x.__class__.__mro__[1].__subclasses__()",
    "y ~ x.__class__",
    f"y ~ eval(\"__import__('os').system('touch {SENTINEL}')\")",
    "y ~ exec('import os')",
    "y ~ (lambda: 1)()",
    "y ~ lambda x: x",
    "y ~ x if True else z",
    "y ~ [c for c in ().__class__.__bases__]",
    "y ~ globals()",
    "y ~ getattr(x, 'y')",
    "y ~ I(__import__('os'))",
    "y ~ log(open('/etc/passwd'))",
    "y ~ x + (1 | __import__('os').getcwd())",
    "y ~ x; import os",
    "y ~ x\nimport os",
    "y ~ `x` + `__import__('os').system('id')`(1)",
    "y ~ {}",
    "y ~ x @ z",
    "y ~ 1e999999 ** 1e999999",
    "y ~ " + "(" * 10_000 + "x" + ")" * 10_000,
    "y ~ " + "(" * 10_000,
    "y ~ " + " + ".join(f"x{i}" for i in range(12_500)),  # about 100 kB
    "y ~ x" + " " * 100_000,
    "y ~ " + "a" * 100_000,
    "y ~ " + "-" * 100_000 + "x",
    "y ~ " + "I(" * 5000 + "x" + ")" * 5000,
    "y ~ " + "log(" * 5000 + "x" + ")" * 5000,
    "y ~ (a+b+c+d+e+f+g+h+i+j+k+l+m+n+o+p+q+r+s+t+u+v+w+x+z)^25",
    "y ~ a*b*c*d*e*f*g*h*i*j*k*l*m*n*o*p*q*r*s*t*u*v*w",
    "\x00y ~ x",
    "y ~ x\u202e",
]


_OWN = ("lmmcore", "numpy", "pandas", "scipy", "statsmodels", "re", "math", "dataclasses",
        "warnings", "functools", "itertools", "collections", "typing", "unicodedata")


@contextlib.contextmanager
def watched():
    """Record (and refuse) any attempt to run code or touch the system inside the block.

    Patched only around the call under test, so pytest's own reporting is unaffected.
    """
    calls = []
    saved = {}

    def refuse(name):
        def record(*args, **kwargs):
            calls.append((name, repr(args[:1])[:80]))
            raise RuntimeError(f"{name} called while reading a formula")
        return record

    real_import = builtins.__import__

    def guarded_import(mod, *a, **k):
        if mod and mod.split(".")[0] not in _OWN:
            calls.append(("__import__", mod))
        return real_import(mod, *a, **k)

    targets = [(builtins, n, refuse(n)) for n in ("eval", "exec", "compile", "open")]
    targets += [(builtins, "__import__", guarded_import), (os, "system", refuse("os.system")),
                (os, "popen", refuse("os.popen")), (subprocess, "Popen", refuse("Popen"))]
    for obj, name, fake in targets:
        saved[(obj, name)] = getattr(obj, name)
        setattr(obj, name, fake)
    try:
        yield calls
    finally:
        for (obj, name), real in saved.items():
            setattr(obj, name, real)


@pytest.fixture(scope="module", autouse=True)
def no_sentinel():
    if os.path.exists(SENTINEL):
        os.remove(SENTINEL)
    # import the grammar before builtins are watched
    lmmcore.parse_formula("y ~ x + (1 | g)")
    yield
    assert not os.path.exists(SENTINEL), "a formula ran a shell command"


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:40]) + f"..{len(t)}")
def test_hostile_formula_is_refused_quickly(text):
    start = time.perf_counter()
    with pytest.raises(FormulaError) as info, watched() as calls:
        lmmcore.parse_formula(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert calls == []
    message = str(info.value)
    assert 0 < len(message) < 600, "the message is for a student, not an echo of 100 kB"
    assert not os.path.exists(SENTINEL)


def _need(fit):
    module = {"lm": "lmmcore.linear", "lmer": "lmmcore.mixed"}[fit]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not there yet")


DATA = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0], "x": [1.0, 2, 3, 4, 5, 6],
                     "g": ["a", "a", "b", "b", "c", "c"]})


NESTED = "y ~ " + "(" * 10_000 + "x" + ")" * 10_000
LONG = "y ~ " + " + ".join(f"x{i}" for i in range(12_500))


@pytest.mark.parametrize("text", [HOSTILE[1], HOSTILE[2], HOSTILE[15], NESTED, LONG],
                         ids=["import", "open", "random-term", "nesting", "100kB"])
@pytest.mark.parametrize("fit", ["lm", "lmer"])
def test_fitting_functions_refuse_them_too(text, fit):
    _need(fit)
    fn = getattr(lmmcore, fit)
    fn("y ~ x + (1 | g)" if fit == "lmer" else "y ~ x", DATA)  # modules loaded before watching
    start = time.perf_counter()
    with pytest.raises(FormulaError), watched() as calls:
        fn(text, DATA)
    assert time.perf_counter() - start < 1.0
    assert calls == []


def test_column_named_like_code_is_only_a_name():
    """A column whose name is Python code can be used in back-quotes: it is looked up, not run."""
    _need("lm")
    name = "__import__('os').system('id')"
    df = DATA.rename(columns={"x": name})
    fit = lmmcore.lm(f"y ~ `{name}`", df)
    assert list(fit.fixef.index) == ["(Intercept)", f"`{name}`"] or name in "".join(fit.fixef.index)


@settings(max_examples=300, deadline=1000)
@given(st.text(alphabet=st.sampled_from(list("yx~+-*/:^|()1 _.`'\"[]{};,=<>!@#$%&\\lambdaimportIeval")) , max_size=80))
def test_any_text_gives_a_formula_or_a_formula_error(text):
    try:
        lmmcore.parse_formula(text)
    except FormulaError:
        pass
    except LmmError as exc:  # pragma: no cover - reported with the text that caused it
        pytest.fail(f"{type(exc).__name__} instead of FormulaError for {text!r}")
