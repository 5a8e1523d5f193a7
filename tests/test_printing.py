"""lmmcore.printing: the shared pieces of R's and lme4's printed layouts.

The whole layouts are compared with frozen R output elsewhere (tests/test_engine_results.py
for lme4's summary, test_tools_linear.py for summary.lm, test_tools_compare.py for anova);
here the pieces a new layout reuses are checked on their own.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore.formula import deparse_call_lines, deparse_lines, parse_formula
from lmmcore.printing import (call_lines, coef_lines, correlation_lines, groups_lines,
                              printed_formula, random_effects_lines)
from lmmcore.rformat import cat_fill

FORMULA = Path(__file__).resolve().parent / "fixtures" / "formula"
PRINTED = json.loads((FORMULA / "printed_call.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", PRINTED, ids=[c["formula"][:40] for c in PRINTED])
def test_formula_and_data_lines_are_lmes(case):
    """lme4's .prt.call: deparse's lines at width.cutoff 60, joined by cat(fill = TRUE)
    (R's output frozen by fixtures/formula/make_expanded.R)."""
    assert call_lines(case["formula"], "sleepstudy") == case["lines"]


LM_CALL = json.loads((FORMULA / "lm_call.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", LM_CALL, ids=[c["formula"][0][:40] for c in LM_CALL])
def test_lm_call_lines_are_rs_deparse(case):
    """summary.lm's "Call:" lines: R's deparse of the lm call (fixtures/formula/lm_call.json)."""
    node = parse_formula(case["formula"][0]).node
    assert deparse_call_lines("lm", [("formula", node), ("data", "sleepstudy")]) == case["lines"]


def test_deparse_lines_break_after_spaced_operators_only():
    f = parse_formula("y ~ " + " + ".join(f"I(x{i}^2):z{i}" for i in range(8)))
    lines = deparse_lines(f.expanded_tree, 60)
    assert len(lines) > 1 and all(line.endswith("+ ") for line in lines[:-1])
    assert all(line.startswith("    ") for line in lines[1:])
    assert "".join(line.strip() + " " for line in lines).strip() == \
        " ".join(str(f).split())
    assert deparse_lines(f.expanded_tree, None) == [str(f)]


def test_a_label_that_is_not_a_formula_prints_as_it_is():
    assert printed_formula("dyestuff") == ["dyestuff"]


def test_cat_fill_is_r_cat_fill():
    # R: cat("Number of obs: 180, groups: ", strrep("x", 51), fill = TRUE) breaks the
    # line after the separator; with 50 x's it does not
    assert cat_fill(["Number of obs: 180, groups: ", "x" * 51]) == \
        ["Number of obs: 180, groups:  ", "x" * 51]
    assert cat_fill(["Number of obs: 180, groups: ", "x" * 50]) == \
        ["Number of obs: 180, groups:  " + "x" * 50]
    assert cat_fill(["z" * 80, "a"]) == ["z" * 80 + " ", "a"]
    assert groups_lines(180, {"Subject": 18}) == ["Number of obs: 180, groups:  Subject, 18"]


def _varcorr(rows):
    cols = list(zip(*rows))
    return pd.DataFrame({"grp": pd.Series(cols[0], dtype=object),
                         "var1": pd.Series(cols[1], dtype=object),
                         "var2": pd.Series(cols[2], dtype=object),
                         "vcov": np.array(cols[3], float), "sdcor": np.array(cols[4], float)})


def test_random_effects_table_without_residual():
    """A glmer fit has no residual row: the table prints the blocks it is given."""
    vc = _varcorr([("herd", "(Intercept)", None, 0.4123, 0.4123 ** 0.5)])
    assert random_effects_lines(vc) == ["Random effects:",
                                        " Groups Name        Variance Std.Dev.",
                                        " herd   (Intercept) 0.4123   0.6421  "]


def test_random_effects_table_with_correlation_and_a_group_called_residual():
    sd = np.array([24.741, 5.922])
    vc = _varcorr([("Residual", "(Intercept)", None, sd[0] ** 2, sd[0]),
                   ("Residual", "Days", None, sd[1] ** 2, sd[1]),
                   ("Residual", "(Intercept)", "Days", 0.066 * sd[0] * sd[1], 0.066),
                   ("Residual", None, None, 25.592 ** 2, 25.592)])
    lines = random_effects_lines(vc)
    assert lines[1].split() == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    # the term of the grouping factor "Residual", then the residual row of its own
    assert lines[2].split()[:2] == ["Residual", "(Intercept)"] and len(lines[2].split()) == 4
    assert lines[3].split()[0] == "Days" and lines[3].split()[-1] == "0.07"
    assert lines[4].split()[0] == "Residual" and len(lines[4].split()) == 3


def test_coefficient_table_with_p_values_and_stars():
    """The piece lmerTest's and glmer's layouts use: printCoefmat with a p-value column."""
    lines = coef_lines([[251.405, 6.825, 36.838, 2e-16], [10.467, 1.546, 6.771, 3.26e-06]],
                       ["(Intercept)", "Days"], ["Estimate", "Std. Error", "t value", "Pr(>|t|)"],
                       cs_ind=(0, 1), tst_ind=(2,), has_pvalue=True)
    assert lines[-2:] == ["---", "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 "
                          "0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"]
    assert lines[1].endswith("***") and lines[2].endswith("***")


def test_correlation_block_only_for_two_to_twelve_coefficients():
    assert correlation_lines(np.eye(1), ["(Intercept)"]) == []
    assert correlation_lines(np.eye(13), [f"x{i}" for i in range(13)]) == []
    c = np.array([[1.0, -0.138], [-0.138, 1.0]])
    assert correlation_lines(c, ["(Intercept)", "Days"]) == [
        "", "Correlation of Fixed Effects:", "     (Intr)", "Days -0.138"]
