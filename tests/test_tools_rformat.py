"""R's number printing (format, format.pval) against values printed by R 4.2.2."""

import json
from pathlib import Path

import pytest

from lmmcore.rformat import format_g, format_numbers, format_pvalues, format_signif, zapsmall

FIX = Path(__file__).resolve().parent / "fixtures" / "r"
FORMAT_CASES = json.loads((FIX / "format_cases.json").read_text())
PVAL_CASES = json.loads((FIX / "format_pval_cases.json").read_text())


@pytest.mark.parametrize("case", FORMAT_CASES, ids=lambda c: f"{c['x']}-{c['digits']}")
def test_format_matches_r(case):
    assert format_numbers(case["x"], case["digits"]) == case["format"]


@pytest.mark.parametrize("case", PVAL_CASES, ids=lambda c: str(c["p"]))
def test_format_pval_matches_r(case):
    assert format_pvalues(case["p"], 4) == case["format4"]
    assert format_pvalues(case["p"], 3) == case["format3"]


def test_zapsmall_rounds_as_r_4_2():
    # R 4.2: zapsmall(c(1814.85047, 1783.097), 5) is 1814.85, 1783.10 (digits 5 - log10(mx)
    # = 1.74 rounds to 2 decimals), so the anova table prints BIC 1814.8, not 1814.9.
    assert list(zapsmall([1814.85047040879, 1783.09708556855], 5)) == [1814.85, 1783.10]
    assert format_numbers(zapsmall([1814.85047040879, 1783.09708556855], 5), 5) == ["1814.8", "1783.1"]


def test_formatc_and_signif():
    assert format_g(0.28653, 4) == "0.2865"
    assert format_g(0.773, 4) == "0.773"
    # formatC pads to digits + 1 characters (R 4.2.2: formatC(71.3, digits=4) is " 71.3")
    assert [format_g(v, 4) for v in (71.3, 1, 0.5, 123456, -3.2, 1234.5)] == [
        " 71.3", "    1", "  0.5", "1.235e+05", " -3.2", " 1234"]
    assert format_signif(47.71488, 4) == "47.71"
    assert format_signif(0.90578, 4) == "0.9058"
