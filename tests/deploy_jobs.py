"""Small module-level jobs for the worker-process tests (a child imports them by name)."""

import os
import time

from lmmcore.errors import FormulaError


def busy(seconds):
    """Burn CPU (not sleep) for ``seconds``: a stand-in for a long fit."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1
    return x


def raise_formula_error(text):
    raise FormulaError(f"unexpected ')' at position 3 in {text!r}", position=3, formula=text)


def raise_zero_division():
    return 1 / 0


def pid():
    return os.getpid()


def die_hard():
    os._exit(3)
