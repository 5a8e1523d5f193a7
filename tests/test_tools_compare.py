"""anova() against lme4 1.1-31's anova (tests/fixtures/r/anova_*.json and .txt)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore import LmmError, anova, lm, lmer
from lmmcore.compare import REFIT_NOTE
from lmmcore.printing import format_anova

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "r"
COLS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
KEYS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "p"]


def _ref(name):
    return json.loads((FIX / f"anova_{name}.json").read_text())


def _nan(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def sleep_fits():
    d = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    kw = dict(categorical=["Subject"], data_name="sleepstudy")
    return {
        "int": lmer("Reaction ~ Days + (1 | Subject)", d, **kw),
        "slope": lmer("Reaction ~ Days + (Days | Subject)", d, **kw),
        "uncor": lmer("Reaction ~ Days + (Days || Subject)", d, **kw),
        "lm": lm("Reaction ~ Days", d, data_name="sleepstudy"),
    }


def _check(table, ref, rtol):
    assert list(table.index) == ref["rows"]
    assert list(table.columns) == COLS
    for col, key in zip(COLS, KEYS):
        want = _nan(ref[key])
        got = table[col].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(got), np.isnan(want)), col
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, err_msg=col)
    assert table.attrs["notes"] == list(ref["messages"])


def test_intercept_vs_slope_refits_with_ml(sleep_fits):
    table = anova(sleep_fits["slope"], sleep_fits["int"], names=["fm2", "fm1"])
    ref = _ref("sleepstudy_int_slope")
    _check(table, ref, rtol=1e-5)
    assert REFIT_NOTE in table.attrs["notes"]
    assert format_anova(table) == (FIX / "anova_sleepstudy_int_slope.txt").read_text(encoding="utf-8")
    # The given fits are unchanged (REML); anova worked on ML refits.
    assert sleep_fits["slope"].reml


def test_lmer_vs_lm(sleep_fits):
    table = anova(sleep_fits["slope"], sleep_fits["lm"], names=["fm2", "lm1"])
    _check(table, _ref("sleepstudy_lmer_lm"), rtol=1e-5)
    assert format_anova(table) == (FIX / "anova_sleepstudy_lmer_lm.txt").read_text(encoding="utf-8")


def test_three_models(sleep_fits):
    table = anova(sleep_fits["int"], sleep_fits["uncor"], sleep_fits["slope"],
                  names=["m_int", "m_uncor", "m_slope"])
    ref = _ref("sleepstudy_three")
    # m_uncor vs m_slope: Chisq 0.064 is a difference of two nearly equal logLiks, so it
    # is compared absolutely (optimizer agreement with lme4 is ~1e-6 on each logLik).
    for col, key in zip(COLS[:5], KEYS[:5]):
        np.testing.assert_allclose(table[col], ref[key], rtol=1e-6, err_msg=col)
    np.testing.assert_allclose(table["Chisq"].iloc[1:], _nan(ref["Chisq"])[1:], atol=2e-3)
    np.testing.assert_allclose(table["Pr(>Chisq)"].iloc[1:], _nan(ref["p"])[1:], rtol=2e-3)
    assert format_anova(table) == (FIX / "anova_sleepstudy_three.txt").read_text(encoding="utf-8")


def test_ml_fits_need_no_refit():
    d = pd.read_csv(ROOT / "data" / "Orthodont.csv")
    kw = dict(categorical=["Subject", "Sex"], data_name="Orthodont", reml=False)
    om1 = lmer("distance ~ age + (1 | Subject)", d, **kw)
    om2 = lmer("distance ~ age + Sex + (1 | Subject)", d, **kw)
    table = anova(om1, om2, names=["om1", "om2"])
    _check(table, _ref("orthodont_ml"), rtol=1e-5)
    assert table.attrs["notes"] == []
    assert format_anova(table) == (FIX / "anova_orthodont_ml.txt").read_text(encoding="utf-8")


def test_format_anova_from_frozen_numbers():
    """The printout alone, from R's own numbers: layout independent of the optimizer."""
    for case in ("sleepstudy_int_slope", "sleepstudy_lmer_lm", "sleepstudy_three", "orthodont_ml"):
        ref = _ref(case)
        table = pd.DataFrame({c: _nan(ref[k]) for c, k in zip(COLS, KEYS)}, index=ref["rows"])
        table.attrs.update(data_name=ref["dataset"],
                           formulas={m["name"]: m["formula"] for m in ref["models"]})
        assert format_anova(table) == (FIX / f"anova_{case}.txt").read_text(encoding="utf-8")


def test_default_names_and_errors(sleep_fits):
    table = anova(sleep_fits["int"], sleep_fits["slope"])
    assert list(table.index) == ["model1", "model2"]
    with pytest.raises(LmmError, match="two or more"):
        anova(sleep_fits["int"])
    with pytest.raises(LmmError, match="different"):
        anova(sleep_fits["int"], sleep_fits["slope"], names=["a", "a"])
    with pytest.raises(LmmError, match="not a fitted model"):
        anova(sleep_fits["int"], "Reaction ~ Days")
    d = pd.read_csv(ROOT / "data" / "sleepstudy.csv").iloc[:170]
    short = lm("Reaction ~ Days", d)
    with pytest.raises(LmmError, match="same size"):
        anova(sleep_fits["int"], short)
